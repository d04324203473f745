"""The README's journey in one go, as a microscopist meets it: the shipped sample opened through
napari, the three docks opened through napari in a 1280x800 window, a real click on the canvas
and C, an export of the sample's annotated planes, a run on the embedded local head, and the
fine-tuned model used in the Segment dock for the next click."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from segment_helpers import cell_centre, click, press

pytestmark = pytest.mark.ray
RUN_TIMEOUT = 600_000


def test_sample_segment_export_train_use(qtbot, make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    viewer.open_sample("napari-raysam", "cells")
    image, truth = viewer.layers["cells"], viewer.layers["cells ground truth"]
    assert image.data.ndim == 3 and image.data.shape[0] >= 4 and truth.data.shape == \
        image.data.shape
    _, segment = viewer.window.add_plugin_dock_widget("napari-raysam", "Segment")
    _, export = viewer.window.add_plugin_dock_widget("napari-raysam", "Export")
    _, train = viewer.window.add_plugin_dock_widget("napari-raysam", "Train")
    try:
        # segment: plane 0, the built-in model, one real click on a cell, C commits it
        viewer.dims.set_current_step(0, 0)
        segment.image_combo.setCurrentText("cells")
        segment.model_combo.setCurrentText("tiny_cells")
        qtbot.mouseClick(segment.embed_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: segment.embeddings is not None, timeout=120_000)
        row, col = cell_centre(np.asarray(truth.data[0]))
        click(qtbot, viewer, row, col)
        preview = viewer.layers["raysam preview"]
        qtbot.waitUntil(lambda: preview.data.any(), timeout=10_000)
        press(viewer, "C")
        objects = viewer.layers["cells objects"]
        assert objects.data[0].max() == 1 and objects.data[0, round(row), round(col)] == 1

        # export: the sample's ground truth, every annotated plane; Preview says what happens
        export.set_pair_checked("cells", "cells objects", False)
        export.set_pair_checked("cells", "cells ground truth", True)
        export.dest_edit.setText(str(tmp_path / "my cells"))
        assert export.preview() is not None, export.status.text()  # checked in a worker
        qtbot.waitUntil(lambda: export.worker is None, timeout=60_000)
        assert export.plan is not None, export.status.text()
        assert "no val" not in export.plan_label.text().lower(), export.plan_label.text()
        qtbot.mouseClick(export.export_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: export.last_export_path is not None, timeout=120_000)
        from napari_raysam.core.dataset import open_dataset

        ts = open_dataset(export.last_export_path)
        assert len(ts.samples) == image.data.shape[0] and ts.has_val

        # train on the embedded local head (Connect starts it), then use the model
        qtbot.mouseClick(train.connect_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "CPUs" in train.summary.text(), timeout=180_000)
        qtbot.mouseClick(train.last_export_button, Qt.MouseButton.LeftButton)
        assert train.dataset_edit.text() == str(export.last_export_path)
        train.epochs.setValue(2)
        train.lr.setValue(3e-3)
        train.auto_use.setChecked(True)
        qtbot.mouseClick(train.start_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: train.model is not None or "FAILED" in train.status.text(),
                        timeout=RUN_TIMEOUT)
        assert train.model is not None, train.status.text() + \
            train.log_view.toPlainText()[-2000:]
        assert sorted(train.plot.epochs) == [1, 2] and "mIoU" in train.result.text()
        qtbot.waitUntil(lambda: not segment.busy and segment.embeddings is not None,
                        timeout=120_000)
        assert segment.model.spec == f"run:{train.model.name}"
        assert f"run:{train.model.name}" in [segment.model_combo.itemText(i)
                                             for i in range(segment.model_combo.count())]
        row, col = cell_centre(np.asarray(truth.data[0]), index=2)
        click(qtbot, viewer, row, col)
        qtbot.waitUntil(lambda: preview.data.any(), timeout=10_000)
        press(viewer, "C")
        assert objects.data[0].max() == 2
    finally:
        train.head.stop()
