"""The Segment dock in a real napari viewer (Xvfb): prompts, preview, commit, automatic
segmentation, the embedding cache, model switches and their errors. Stacks, channels, the dock's
layers and the image changing are in test_segment_widget_planes."""

import numpy as np

from hardware_helpers import expected_auto_label
from napari_raysam.core.dataset.synthetic import make_sample
from napari_raysam.core.sam.embeddings import EmbeddingCache
from segment_helpers import TIMEOUT, cell_centre, embed, press, wait


def test_points_preview_commit_undo(qtbot, dock):
    viewer, widget = dock
    embed(qtbot, widget)
    preview = viewer.layers["raysam preview"]
    assert preview.data.max() == 0
    widget.prompts.add_point(*cell_centre(widget.sample.labels))
    first = preview.data.copy()
    assert first.any()
    press(viewer, "T")
    assert "negative" in widget.sign_button.text()
    widget.prompts.add_point(5, 5)
    assert list(viewer.layers["raysam points"].features["sign"]) == [1, 0]
    assert not np.array_equal(first, preview.data)  # the negative point changed the mask
    widget.toggle_sign()

    expected = preview.data > 0
    assert viewer.layers.selection.active.name == "raysam points"
    press(viewer, "C")
    target = viewer.layers["cells objects"]
    np.testing.assert_array_equal(target.data == 1, expected)
    assert len(viewer.layers["raysam points"].data) == 0 and preview.data.max() == 0
    indices = target._undo_history[-1][0][0]  # napari keeps these for its last 100 commits
    assert all(axis.dtype == np.int16 for axis in indices)  # not int64: 8 B/pixel, not 20
    target.undo()
    assert target.data.max() == 0
    target.redo()
    assert target.data.max() == 1


def test_boxes_commit_several_objects(qtbot, dock):
    viewer, widget = dock
    embed(qtbot, widget)
    widget.prompts.add_box(10, 10, 60, 70)
    widget.prompts.add_box(90, 100, 150, 180)
    assert set(np.unique(viewer.layers["raysam preview"].data)) <= {0, 1, 2}
    ids = widget.commit()
    assert ids == [1, 2]
    assert set(np.unique(viewer.layers["cells objects"].data)) <= {0, 1, 2}


def test_commit_ids_follow_brush_strokes_and_replaced_data(qtbot, dock):
    """The next id is kept without rescanning the volume, yet never reuses a painted id."""
    viewer, widget = dock
    embed(qtbot, widget)
    widget.prompts.add_box(10, 10, 60, 70)
    assert widget.commit() == [1]
    target = viewer.layers["cells objects"]
    target.paint((150, 180), 7)  # the user paints object 7 with the brush
    widget.prompts.add_box(90, 100, 150, 180)
    assert widget.commit() == [8]
    data = np.zeros_like(target.data)
    data[0, 0] = 20
    target.data = data  # replaced (e.g. a script): scanned once again
    widget.prompts.add_box(10, 10, 60, 70)
    assert widget.commit() == [21]
    widget.release()  # the dock stops listening to the objects layer's strokes
    assert not widget.prompts._ids


def test_cache_size_and_clear_in_workers(qtbot, dock):
    viewer, widget = dock
    embed(qtbot, widget)
    size = widget.cache.size_bytes()
    assert size > 0
    shown = f"Embedding cache: {size / 1e6:.1f} MB"
    qtbot.waitUntil(lambda: widget._sizing is None and widget.cache_label.text() == shown,
                    timeout=TIMEOUT)
    assert widget.clear_cache() is not None and not widget.clear_cache_button.isEnabled()
    qtbot.waitUntil(widget.clear_cache_button.isEnabled, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: widget._sizing is None, timeout=TIMEOUT)
    assert "Cleared" in widget.status.text() and "0.0 MB" in widget.cache_label.text()
    assert widget.cache.entries() == []


def test_clear_key_and_errors_in_status(qtbot, dock):
    viewer, widget = dock
    embed(qtbot, widget)
    widget.prompts.add_point(20, 20)
    viewer.layers.selection.active = viewer.layers["raysam boxes"]
    press(viewer, "Shift+C")
    assert len(viewer.layers["raysam points"].data) == 0
    assert widget.commit() == [] and "Nothing to commit" in widget.status.text()
    widget.prompts.add_box(10, 10, 10, 40)  # zero area
    assert "no area" in widget.status.text()


def test_automatic_segmentation_fills_labels(qtbot, dock):
    viewer, widget = dock
    embed(qtbot, widget)
    assert widget.run_automatic() is not None
    wait(qtbot, widget)
    assert "cells automatic" in viewer.layers
    assert viewer.layers["cells automatic"].data.shape == (160, 192)
    assert "objects" in widget.status.text()


def test_model_switch_same_encoder_reuses_embedding(qtbot, dock, tmp_path):
    import torch

    from napari_raysam.core.sam import models

    viewer, widget = dock
    embed(qtbot, widget)
    sam = models.build_tiny_sam(seed=0)
    with torch.no_grad():
        for p in sam.mask_decoder.parameters():
            p.mul_(0.5)
    path = models.save_checkpoint(tmp_path / "finetuned.pt", sam, "tiny", models.TinyConfig())
    entries = len(widget.cache.entries())
    widget.model_combo.setCurrentText(str(path))
    widget.model_combo.lineEdit().editingFinished.emit()  # what pressing Enter does
    wait(qtbot, widget)
    assert widget.model.spec == str(path) and widget.embeddings is not None
    assert len(widget.cache.entries()) == entries  # same encoder: no new embedding
    widget.model_combo.setCurrentText("tiny:3")
    embed(qtbot, widget)
    assert len(widget.cache.entries()) == entries + 1


def test_dock_scales_pixels_as_the_model_was_trained(qtbot, dock, tmp_path):
    """tiny (a micro-sam-style model): micro-sam's pixels; a checkpoint that records percentile
    scaling (same encoder): percentile pixels, so a new embedding, not the cached one."""
    from micro_sam.util import _to_image

    from napari_raysam.core.images import LEGACY, to_sam_rgb
    from napari_raysam.core.sam import models

    viewer, widget = dock
    embed(qtbot, widget)
    np.testing.assert_array_equal(widget.rgb, _to_image(widget.sample.image))
    path = models.save_checkpoint(tmp_path / "pct.pt", models.build_tiny_sam(seed=0), "tiny",
                                  models.TinyConfig(), normalisation=LEGACY.normalisation())
    entries = len(widget.cache.entries())
    widget.use_model(str(path))
    wait(qtbot, widget)
    assert widget.model.spec == str(path) and widget.embeddings is not None
    np.testing.assert_array_equal(widget.rgb, to_sam_rgb(widget.sample.image, LEGACY))
    assert len(widget.cache.entries()) == entries + 1


def test_bad_model_shows_message_and_napari_stays(qtbot, dock, tmp_path):
    viewer, widget = dock
    bad = tmp_path / "page.pt"
    bad.write_text("<html>error</html>")
    widget.model_combo.setCurrentText(str(bad))
    widget.compute_embedding()
    wait(qtbot, widget)
    assert "web page" in widget.status.text() and widget.embeddings is None
    assert viewer.layers["cells"] is not None


def test_event_loop_runs_while_embedding_computes(qtbot, make_napari_viewer, tmp_path):
    from qtpy.QtCore import QTimer

    from napari_raysam._qt.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    viewer.add_image(make_sample((1400, 1400), seed=9).image, name="big")  # tiled: slow
    widget = SegmentWidget(viewer, cache=EmbeddingCache(tmp_path / "emb"))
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    assert widget.compute_embedding() is not None
    wait(qtbot, widget)
    timer.stop()
    assert widget.embeddings is not None
    assert len(ticks) >= 5  # the heartbeat fired while the worker computed


def test_prompt_layer_stays_active_after_commit_and_automatic(qtbot, dock):
    viewer, widget = dock
    embed(qtbot, widget)
    widget.prompts.add_point(*cell_centre(widget.sample.labels))
    assert widget.commit() == [1]
    assert viewer.layers.selection.active.name == "raysam points"
    assert widget.run_automatic() is not None
    wait(qtbot, widget)
    assert viewer.layers.selection.active.name == "raysam points"
    assert viewer.layers["raysam points"].mode == "add"
    names = [layer.name for layer in viewer.layers]  # the prompts stay drawn on top
    assert names[-3:] == ["raysam preview", "raysam boxes", "raysam points"]


def test_status_names_the_model_and_what_is_missing(qtbot, dock):
    viewer, widget = dock
    assert widget.model_label.text() == "Model: tiny (loads with the embedding)"
    widget.prompts.add_point(20, 20)
    assert widget.commit() == []
    assert "compute the embedding first" in widget.status.text()
    widget.clear()
    embed(qtbot, widget)
    assert "plane" not in widget.status.text()  # a 2D image has no plane to name
    precision = expected_auto_label(widget.model.device)
    assert widget.model_label.text() == f"Model: tiny · {precision}"
    assert widget.commit() == [] and "add prompts" in widget.status.text()
    widget.model_combo.setCurrentText("tiny:3")
    assert widget.model_label.text() == \
        f"Model: tiny · {precision} (tiny:3 loads with the next embedding)"
    embed(qtbot, widget)
    assert widget.model_label.text() == f"Model: tiny:3 · {precision}"
