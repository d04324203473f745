"""Full garbage collections: the docks freeze the long-lived heap; removing a layer collects."""

from __future__ import annotations

import gc
import weakref

import numpy as np


class Cycle:
    def __init__(self):
        self.me = self
        self.data = np.ones(1000)


def test_dock_freezes_heap_and_layer_removal_collects(qtbot, make_napari_viewer, monkeypatch):
    from napari_raysam._qt.gc_pauses import RECOLLECT_DELAY_MS, QuietCollector

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 8)), name="a")
    viewer.add_image(np.zeros((8, 8)), name="b")
    from napari_raysam._qt._common import ViewerHooks

    collector = QuietCollector(viewer, ViewerHooks())
    assert gc.get_freeze_count() > 1000  # napari, numpy, Qt wrappers: out of the GC's walks

    garbage = Cycle()  # a cycle that was alive at a freeze (like a layer open then) ...
    gc.freeze()
    ref = weakref.ref(garbage)
    del garbage  # ... and then became garbage
    gc.collect()
    assert ref() is not None  # a plain full collection no longer sees it

    unfreezes = []
    unfreeze = gc.unfreeze
    monkeypatch.setattr(gc, "unfreeze", lambda: (unfreezes.append(1), unfreeze()))
    viewer.layers.remove("a")
    viewer.layers.remove("b")  # two removals: one collection
    qtbot.wait(RECOLLECT_DELAY_MS * 3)
    assert ref() is None  # collected after the removal
    assert len(unfreezes) == 1
    assert gc.get_freeze_count() > 1000  # and the heap is frozen again
    assert collector.timer.isSingleShot()


def test_the_freeze_is_logged_undone_when_the_docks_close_and_can_be_switched_off(
        qtbot, make_napari_viewer, monkeypatch, caplog):
    import logging

    from napari_raysam._qt import gc_pauses

    monkeypatch.setattr(gc_pauses, "_HEAP", gc_pauses._FrozenHeap())  # this test's own state
    gc.unfreeze()
    viewer = make_napari_viewer()
    with caplog.at_level(logging.INFO, logger="napari_raysam._qt.gc_pauses"):
        first, a = viewer.window.add_plugin_dock_widget("napari-raysam", "Export")
        second, b = viewer.window.add_plugin_dock_widget("napari-raysam", "Train")
        assert gc.get_freeze_count() > 1000
        assert "froze" in caplog.text and "NAPARI_RAYSAM_GC_FREEZE=0" in caplog.text
        viewer.window.remove_dock_widget(first)
        assert gc.get_freeze_count() > 1000  # the Train dock still holds it
        viewer.window.remove_dock_widget(second)
        assert gc.get_freeze_count() == 0  # napari's process as it was
        assert "unfroze" in caplog.text

        monkeypatch.setenv("NAPARI_RAYSAM_GC_FREEZE", "0")
        viewer.window.add_plugin_dock_widget("napari-raysam", "Export")
        assert gc.get_freeze_count() == 0
        assert "leaves the garbage collector alone" in caplog.text
