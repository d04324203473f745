"""Keep CPython's full garbage collections from freezing napari for ~0.4 s at random moments.

napari with torch, torchvision and micro-sam loaded holds ~870k objects that the cyclic garbage
collector tracks. Every full (generation 2) collection walks all of them with the GIL held:
~400 ms on this machine, in whichever thread allocated last, so the GUI thread stalls while an
embedding computes or a run streams (``benchmarks/responsiveness.py`` sees these pauses).

Once the docks have loaded their modules, the objects alive then (modules, classes, napari's
own widgets) are moved to the collector's permanent generation (``gc.freeze``): later full
collections only walk what was made afterwards. Objects frozen this way are still freed by
reference counting; only reference cycles among them wait. The layers alive at the freeze are
the one case that matters (a removed layer may hold a large array in a cycle), so removing a
layer triggers one complete collection (unfreeze, collect, freeze) shortly afterwards, at a
moment the user caused.
"""

from __future__ import annotations

import gc
import time

from qtpy.QtCore import QTimer

RECOLLECT_DELAY_MS = 300  # coalesces the removal of several layers into one collection


class _FrozenHeap:
    """The process's one collector state (the cyclic GC is process-wide, so is this)."""

    def __init__(self):
        self.frozen = False
        self.last_full = 0.0

    def freeze(self) -> None:
        if not self.frozen:
            gc.collect()
            gc.freeze()
            self.frozen = True
            self.last_full = time.monotonic()

    def recollect(self) -> None:
        if time.monotonic() - self.last_full < RECOLLECT_DELAY_MS / 1e3:
            return  # another dock's timer just did it
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.last_full = time.monotonic()


_HEAP = _FrozenHeap()


class QuietCollector:
    """Freezes the long-lived heap (once per process) and collects after layer removals."""

    def __init__(self, viewer, hooks):
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.setInterval(RECOLLECT_DELAY_MS)
        self.timer.timeout.connect(_HEAP.recollect)
        hooks.connect(viewer.layers.events.removed, self._on_removed)
        _HEAP.freeze()

    def _on_removed(self, _event=None) -> None:
        self.timer.start()
