"""Helpers for the Segment dock tests: wait for its workers, embed, press its keys, click the
canvas, count embedding requests, find a cell to prompt."""

import numpy as np

TIMEOUT = 60_000


def wait(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)


def embed(qtbot, widget):
    worker = widget.compute_embedding()
    assert worker is not None, widget.status.text()
    wait(qtbot, widget)
    assert widget.embeddings is not None, widget.status.text()


def press(viewer, key):
    """Run the binding a key press reaches: the active layer's first, else the viewer's."""
    layer = viewer.layers.selection.active
    for owner in (layer, viewer):
        bindings = {str(k): func for k, func in getattr(owner, "keymap", {}).items()}
        if key in bindings:
            return bindings[key](owner)
    raise AssertionError(f"{key} is not bound")


def click(qtbot, viewer, row, col):
    """A real left click on the canvas at data (row, col) of an unscaled 2D image."""
    from qtpy.QtCore import QPoint, Qt

    native = viewer.window._qt_viewer.canvas.native
    centre, zoom = viewer.camera.center[-2:], viewer.camera.zoom  # screen px per data px
    x = (col - centre[1]) * zoom + native.width() / 2
    y = (row - centre[0]) * zoom + native.height() / 2
    qtbot.mouseClick(native, Qt.MouseButton.LeftButton, pos=QPoint(round(x), round(y)))


def count_embeddings(widget) -> list:
    """Count the dock's embedding requests (cache hits included: they re-embed all the same)."""
    calls = []
    get_or_compute = widget.cache.get_or_compute
    widget.cache.get_or_compute = lambda *a, **k: (calls.append(1), get_or_compute(*a, **k))[1]
    return calls


def cell_centre(labels, index=1):
    ids, counts = np.unique(labels, return_counts=True)
    target = ids[1:][np.argsort(counts[1:])[-index]]
    rows, cols = np.nonzero(labels == target)
    return rows.mean(), cols.mean()
