"""Screenshots of the three docks in a real napari window, for the README (docs/*.png).

Run under a virtual display: ``xvfb-run -a -s "-screen 0 1600x1000x24" python
scripts/screenshots.py``. It segments a few cells of the synthetic sample with the shipped
``tiny_cells`` model, exports them (plus a second annotated image), fine-tunes for a few epochs
on the embedded local Ray cluster through the Train dock, and stops that cluster at the end.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[1] / "docs"


def wait(app, condition, timeout=600.0):
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
    print("wrote", DOCS / name)


def main() -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_raysam._qt.export_widget import ExportWidget
    from napari_raysam._qt.segment_widget import SegmentWidget
    from napari_raysam._qt.train_widget import TrainWidget
    from napari_raysam.core.sample_data import make_sample

    work = Path(tempfile.mkdtemp(prefix="raysam-shots-"))
    for kind in ("CONFIG", "DATA", "CACHE"):  # keep the user's settings and models untouched
        os.environ[f"NAPARI_RAYSAM_{kind}"] = str(work / kind.lower())
    viewer = napari.Viewer(title="napari-raysam")
    app = QApplication.instance()
    viewer.window._qt_window.resize(1500, 950)
    samples = [make_sample((384, 384), seed=s) for s in (0, 1, 2)]
    viewer.add_image(np.stack([s.image for s in samples]), name="cells")
    segment = SegmentWidget(viewer)
    viewer.window.add_dock_widget(segment, name="Segment")
    for plane, sample in enumerate(samples):
        viewer.dims.set_current_step(0, plane)
        wait(app, lambda: not segment.busy)
        if segment._embedded_for is None or segment._embedded_for[1] != (plane,):
            segment.compute_embedding()
            wait(app, lambda: not segment.busy)
        ids, counts = np.unique(sample.labels, return_counts=True)
        for cell in ids[1:][np.argsort(counts[1:])[-6:]]:
            rows, cols = np.nonzero(sample.labels == cell)
            segment.prompts.add_point(rows.mean(), cols.mean())
            segment.commit()
    rows, cols = np.nonzero(samples[-1].labels == 1)
    segment.prompts.add_point(rows.mean(), cols.mean())
    shot(viewer, app, "segment_dock.png")
    segment.clear()

    export = ExportWidget(viewer)
    viewer.window.add_dock_widget(export, name="Export")
    export.dest_edit.setText(str(work / "training set"))
    export.preview()
    export.export()
    wait(app, lambda: export.last_export_path is not None)
    shot(viewer, app, "export_dock.png")

    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train")
    train.storage_edit.setText(str(work / "storage"))
    train.connect()
    wait(app, lambda: "CPUs" in train.summary.text() or "error" in train.status.text())
    train.use_last_export()
    train.epochs.setValue(4)
    train.lr.setValue(1e-3)
    train.mode_combo.setCurrentText("full")
    train.start()
    wait(app, lambda: len(train.plot.epochs) >= 2)
    train.log_box.setChecked(True)
    shot(viewer, app, "train_dock_running.png")
    train.log_box.setChecked(False)
    wait(app, lambda: train.model is not None or "FAILED" in train.status.text())
    shot(viewer, app, "train_dock_done.png")
    train.head.stop()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
