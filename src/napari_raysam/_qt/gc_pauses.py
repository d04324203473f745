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

This changes napari's whole process, so it is logged, undone (``gc.unfreeze``) when the last
dock that asked for it closes, and can be switched off: ``NAPARI_RAYSAM_GC_FREEZE=0``.
"""

from __future__ import annotations

import gc
import logging
import os
import time

from qtpy.QtCore import QTimer

RECOLLECT_DELAY_MS = 300  # coalesces the removal of several layers into one collection
OPT_OUT = "NAPARI_RAYSAM_GC_FREEZE"
log = logging.getLogger(__name__)


def enabled() -> bool:
    return os.environ.get(OPT_OUT, "1").strip().lower() not in ("0", "false", "no", "off")


class _FrozenHeap:
    """The process's one collector state (the cyclic GC is process-wide, so is this): frozen
    while at least one dock holds it."""

    def __init__(self):
        self.holders = 0
        self.last_full = 0.0

    @property
    def frozen(self) -> bool:
        return self.holders > 0

    def acquire(self) -> bool:
        """Freeze (first holder) and count a holder; False when switched off."""
        if not enabled():
            log.info("napari-raysam leaves the garbage collector alone (%s=0)", OPT_OUT)
            return False
        if self.holders == 0:
            gc.collect()
            gc.freeze()
            self.last_full = time.monotonic()
            log.info("napari-raysam froze %d long-lived objects out of full garbage "
                     "collections (undone when its docks close; %s=0 switches this off)",
                     gc.get_freeze_count(), OPT_OUT)
        self.holders += 1
        return True

    def release(self) -> None:
        """One holder less; the last one gives the frozen objects back to the collector."""
        if self.holders == 0:
            return
        self.holders -= 1
        if self.holders == 0:
            gc.unfreeze()
            log.info("napari-raysam unfroze the heap: its docks are closed")

    def recollect(self) -> None:
        if not self.frozen or time.monotonic() - self.last_full < RECOLLECT_DELAY_MS / 1e3:
            return  # another dock's timer just did it, or nothing is frozen
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
        self.held = _HEAP.acquire()
        if self.held:
            hooks.connect(viewer.layers.events.removed, self._on_removed)
            hooks.on_release(self.release)

    def release(self) -> None:
        self.timer.stop()
        if self.held:
            self.held = False
            _HEAP.release()

    def _on_removed(self, _event=None) -> None:
        self.timer.start()
