"""Screenshots of the three docks in a real 1280x800 napari window, for the README (docs/*.png).

Run under a virtual display: ``xvfb-run -a -s "-screen 0 1600x1000x24" python
scripts/screenshots.py``. It opens the built-in sample (File > Open Sample), opens the docks the
way napari does, segments a few cells with the shipped ``tiny_cells`` model (clicks and C),
exports the sample's annotated planes, then runs the demo's default fine-tune (the same
training set and options as ``napari-raysam demo``) on the embedded local Ray cluster and
follows it in the Train dock; the cluster is stopped at the end. It fails if the run did not
improve the model (the README must not show a fine-tune that made things worse).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[1] / "docs"
SIZE = (1280, 800)


def wait(app, condition, timeout=900.0):
    end = time.monotonic() + timeout
    while not condition():
        app.processEvents()
        time.sleep(0.05)
        if time.monotonic() > end:
            raise TimeoutError("gave up waiting")
    for _ in range(10):
        app.processEvents()


def shot(viewer, app, name):
    for _ in range(20):
        app.processEvents()
    viewer.screenshot(str(DOCS / name), canvas_only=False)
    print("wrote", DOCS / name, flush=True)


def dock_of(viewer, widget):
    """The QDockWidget napari wrapped ``widget`` in."""
    from qtpy.QtWidgets import QDockWidget

    parent = widget
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def front(viewer, widget, first=None, bottom=False):
    """Tab ``widget``'s dock with ``first``'s (as a user stacks docks on a laptop screen),
    bring it to the front and, with ``bottom``, scroll it to its end (plot, result, log)."""
    from qtpy.QtWidgets import QScrollArea

    dock = dock_of(viewer, widget)
    if first is not None and first is not widget:
        viewer.window._qt_window.tabifyDockWidget(dock_of(viewer, first), dock)
    dock.show()
    dock.raise_()
    if bottom:
        for area in dock.findChildren(QScrollArea):
            area.verticalScrollBar().setValue(area.verticalScrollBar().maximum())


def main() -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    work = Path(tempfile.mkdtemp(prefix="raysam-shots-"))
    for kind in ("CONFIG", "DATA", "CACHE"):  # keep the user's settings and models untouched
        os.environ[f"NAPARI_RAYSAM_{kind}"] = str(work / kind.lower())
    from napari_raysam.core import runs
    from napari_raysam.demo import DemoOptions, export_annotations, run_options

    viewer = napari.Viewer(title="napari-raysam")
    app = QApplication.instance()
    viewer.window._qt_window.resize(*SIZE)
    viewer.open_sample("napari-raysam", "cells")
    truth = np.asarray(viewer.layers["cells ground truth"].data)
    _, segment = viewer.window.add_plugin_dock_widget("napari-raysam", "Segment")
    segment.model_combo.setCurrentText("tiny_cells")
    viewer.dims.set_current_step(0, 0)
    segment.compute_embedding()
    wait(app, lambda: not segment.busy and segment.embeddings is not None)
    ids, counts = np.unique(truth[0], return_counts=True)
    big = ids[1:][np.argsort(counts[1:])[::-1]]
    for cell in big[:6]:
        rows, cols = np.nonzero(truth[0] == cell)
        segment.prompts.add_point(rows.mean(), cols.mean())
        segment.commit()
    rows, cols = np.nonzero(truth[0] == big[6])
    segment.prompts.add_point(rows.mean(), cols.mean())
    shot(viewer, app, "segment_dock.png")
    segment.clear()

    _, export = viewer.window.add_plugin_dock_widget("napari-raysam", "Export")
    front(viewer, export, segment)
    export.set_pair_checked("cells", "cells objects", False)
    export.set_pair_checked("cells", "cells ground truth", True)
    export.dest_edit.setText(str(work / "my cells"))
    export.preview()
    export.export()
    wait(app, lambda: export.last_export_path is not None)
    shot(viewer, app, "export_dock.png")

    _, train = viewer.window.add_plugin_dock_widget("napari-raysam", "Train")
    front(viewer, train, segment)
    train.connect()
    wait(app, lambda: "CPUs" in train.summary.text() or "rror" in train.status.text())
    opts = DemoOptions(out=str(work / "demo"))
    dataset = export_annotations(work / "demo" / "training set", opts)
    train.dataset_edit.setText(str(dataset))
    train.epochs.setValue(opts.epochs)
    train.workers_spin.setValue(opts.workers)
    train.lr.setValue(opts.lr)
    train.mode_combo.setCurrentText(opts.mode)
    train.model_edit.setText(opts.model)
    try:  # the demo's exact options (steps per epoch, correction rounds: not on the form)
        record = runs.submit(train.current_profile(), dataset, run_options(opts), train.index,
                             train.head)
        train.follow(record)
        wait(app, lambda: len(train.plot.epochs) >= 3)
        train.log_box.setChecked(True)
        front(viewer, train, bottom=True)
        shot(viewer, app, "train_dock_running.png")
        train.log_box.setChecked(False)
        wait(app, lambda: train.model is not None or "FAILED" in train.status.text())
        front(viewer, train, bottom=True)
        shot(viewer, app, "train_dock_done.png")
    finally:
        train.head.stop()
    model = train.model
    before, after = (model.metrics.get("before") or {}), (model.metrics.get("after") or {})
    print("box mIoU", before.get("val_miou_box"), "->", after.get("val_miou_box"),
          "point", before.get("val_miou_point"), "->", after.get("val_miou_point"), flush=True)
    viewer.close()
    if after.get("val_miou_box", 0) <= before.get("val_miou_box", 0):
        print("the demo run did not improve the model: do not use these screenshots")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
