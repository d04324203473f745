"""A dock is a guest in napari: closing it (napari's x button: ``remove_dock_widget``) releases
its viewer key bindings and event callbacks (and the Segment dock's prompt layers), so keys
pressed with no dock open do nothing of ours; a reopened dock works again."""

from __future__ import annotations

import numpy as np
import pytest

from segment_helpers import press

DOCKS = ("Segment", "Export", "Train")  # the Apply dock listens to no viewer event


def _owners(emitter) -> set[int]:
    """ids of the objects whose methods listen to a napari event emitter."""
    out = set()
    for callback in emitter.callbacks:
        if isinstance(callback, tuple):  # (weakref to the object, method name)
            obj = callback[0]() if callable(callback[0]) else callback[0]
        else:
            obj = getattr(callback, "__self__", callback)
        out.add(id(obj))
    return out


def _listens(viewer, widget) -> bool:
    emitters = [viewer.dims.events.current_step, viewer.layers.events.inserted,
                viewer.layers.events.removed, viewer.layers.events.moved]
    mine = {id(widget), *(id(getattr(widget, a)) for a in ("image_combo", "quiet_gc")
                          if hasattr(widget, a))}
    return any(_owners(e) & mine for e in emitters)


@pytest.mark.parametrize("name", DOCKS)
def test_closing_a_dock_releases_the_viewer_and_reopening_works(qtbot, make_napari_viewer,
                                                                name):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.random.default_rng(0).random((3, 64, 64)), name="cells")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-raysam", name)
    real = viewer.window._qt_viewer.viewer  # the model behind the dock's proxy viewer
    assert _listens(real, widget)
    viewer.window.remove_dock_widget(dock)  # what the dock's x button does
    qtbot.wait(50)
    assert not _listens(real, widget)
    assert not [layer.name for layer in viewer.layers if layer.name.startswith("raysam ")]
    viewer.layers.selection.active = viewer.layers["cells"]
    for key in ("C", "Shift-C", "T"):
        with pytest.raises(AssertionError, match="not bound"):
            press(viewer, key)  # no dock open: none of our keys is bound
    viewer.dims.set_current_step(0, 2)  # no callback into the closed dock (it would raise)

    _, again = viewer.window.add_plugin_dock_widget("napari-raysam", name)
    assert _listens(real, again)
    if name == "Segment":
        press(viewer, "C")  # bound to the new dock: no embedding yet, it says what to do
        assert "embedding" in again.status.text().lower()
