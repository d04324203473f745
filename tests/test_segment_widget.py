"""The Segment dock in a real napari viewer (Xvfb)."""

import numpy as np
import pytest

from hardware_helpers import expected_auto_label
from napari_raysam.core.dataset.synthetic import make_sample
from napari_raysam.core.sam.embeddings import EmbeddingCache

TIMEOUT = 60_000


@pytest.fixture
def dock(make_napari_viewer, tmp_path):
    from napari_raysam._qt.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    sample = make_sample((160, 192), seed=4)
    viewer.add_image(sample.image, name="cells")
    widget = SegmentWidget(viewer, cache=EmbeddingCache(tmp_path / "emb"))
    widget.model_combo.setCurrentText("tiny")  # random weights, seed 0 (tests rely on it)
    viewer.window.add_dock_widget(widget)
    widget.sample = sample
    return viewer, widget


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


def test_stack_embeds_the_viewed_plane(qtbot, make_napari_viewer, tmp_path):
    from napari_raysam._qt.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    stack = np.stack([make_sample((96, 96), seed=s).image for s in range(3)])
    viewer.add_image(stack, name="stack")
    widget = SegmentWidget(viewer, cache=EmbeddingCache(tmp_path / "emb"))
    viewer.dims.set_current_step(0, 2)
    embed(qtbot, widget)
    assert widget._embedded_for[1] == (2,)
    assert widget.status.text().startswith("Embedding ready (stack, plane 2).")
    widget.prompts.add_point(48, 48)
    widget.commit()
    objects = viewer.layers["stack objects"].data
    assert objects.shape == (3, 96, 96) and objects[2].any() and not objects[:2].any()
    viewer.dims.set_current_step(0, 1)  # switching plane computes that plane's embedding
    qtbot.waitUntil(lambda: widget._embedded_for[1] == (1,), timeout=TIMEOUT)


def test_hpa_four_channel_layer(qtbot, make_napari_viewer, tmp_path):
    from napari_raysam._qt.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    sample = make_sample((96, 112), channels=4, seed=2)
    viewer.add_image(sample.image, name="hpa", metadata={"raysam_channel_axis": 0})
    widget = SegmentWidget(viewer, cache=EmbeddingCache(tmp_path / "emb"))
    widget.channels_edit.setText("2,0,3")
    embed(qtbot, widget)
    assert widget.rgb.shape == (96, 112, 3)
    widget.prompts.add_point(40, 40)
    assert widget.commit() == [1]
    assert viewer.layers["hpa objects"].data.shape == (96, 112)


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


def test_objects_layer_keeps_a_later_channel_axis_aligned(make_napari_viewer):
    """T,Z,C,Y,X with a scale: the objects layer keeps C (length 1) spanning every channel."""
    from napari_raysam._qt.prompt_layers import PromptLayers, objects_layout

    viewer = make_napari_viewer()
    data = np.zeros((2, 3, 4, 16, 16), np.uint16)
    data[..., 4:8, 4:8] = 7
    image = viewer.add_image(data, name="img", scale=(1, 2, 0.5, 0.3, 0.3),
                             translate=(0, 1, 10, 0, 0), metadata={"raysam_channel_axis": 2})
    shape, scale, translate = objects_layout(image)
    assert shape == (2, 3, 1, 16, 16)
    assert scale == [1, 2, 2.0, 0.3, 0.3] and translate == [0, 1, 10.75, 0, 0]
    prompts = PromptLayers(viewer, on_change=lambda: None)
    objects = prompts.target_labels(image)
    assert prompts.lead_index(objects, image, (1, 2)) == (1, 2, 0)
    index = prompts.lead_index(objects, image, (1, 2))  # what commit() writes
    objects.data_setitem(tuple(np.array([i]) for i in (*index, 5, 5)), 1)
    viewer.dims.set_current_step(0, 1)
    viewer.dims.set_current_step(1, 2)
    for channel in range(4):  # every channel of the viewed (T, Z) plane shows the object
        viewer.dims.set_current_step(2, channel)
        assert objects._slice.image.raw.any(), channel
    viewer.dims.set_current_step(1, 1)
    assert not objects._slice.image.raw.any()
    # a channel-first image: the channel axis is dropped (the rest are trailing axes)
    cyx = viewer.add_image(data[0, 0], name="cyx", metadata={"raysam_channel_axis": 0})
    assert objects_layout(cyx)[0] == (16, 16)
    assert prompts.lead_index(prompts.target_labels(cyx), cyx, ()) == ()


def test_prompt_layers_made_at_open_then_fitted_to_the_image(qtbot, make_napari_viewer, tmp_path):
    """The dock adds its prompt layers when it opens (not when the embedding arrives); the
    embedding fits them to the image (shape, scale, above it); a reopened dock takes them over."""
    from napari_raysam._qt.prompt_layers import BOXES, POINTS, PREVIEW
    from napari_raysam._qt.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    first = SegmentWidget(viewer, cache=EmbeddingCache(tmp_path / "emb"))
    assert [la.name for la in viewer.layers] == [PREVIEW, BOXES, POINTS]
    assert viewer.layers[POINTS].mode == "pan_zoom"  # no embedding: clicks still pan
    sample = make_sample((96, 80), seed=2)
    viewer.add_image(sample.image, name="cells", scale=(0.5, 0.5), translate=(3, 4))
    assert [la.name for la in viewer.layers][-1] == "cells"  # on top of the prompt layers

    second = SegmentWidget(viewer, cache=EmbeddingCache(tmp_path / "emb"))  # reopened dock
    second.model_combo.setCurrentText("tiny")
    embed(qtbot, second)
    assert [la.name for la in viewer.layers] == ["cells", PREVIEW, BOXES, POINTS]
    for name in (PREVIEW, BOXES, POINTS):
        np.testing.assert_allclose(viewer.layers[name].scale, (0.5, 0.5))
        np.testing.assert_allclose(viewer.layers[name].translate, (3, 4))
    assert viewer.layers[PREVIEW].data.shape == (96, 80)
    assert viewer.layers[POINTS].mode == "add"
    assert viewer.layers.selection.active.name == POINTS
    second.prompts.add_point(*cell_centre(sample.labels))
    assert viewer.layers[PREVIEW].data.any()  # the new dock answers the prompt
    assert first.embeddings is None

    viewer.layers.remove(BOXES)  # deleted by the user: the next embedding adds it again
    embed(qtbot, second)
    assert BOXES in viewer.layers


def open_segment_dock(viewer, via: str):
    """The Segment dock as napari opens it: ``add_plugin_dock_widget`` (the demo, ``napari -w``)
    or the Plugins menu's action."""
    from napari_raysam._qt.segment_widget import SegmentWidget

    if via == "add_plugin_dock_widget":
        return viewer.window.add_plugin_dock_widget("napari-raysam", "Segment")[1]
    from napari._app_model import get_app_model

    get_app_model().commands.execute_command("napari-raysam.segment_widget").result()
    docks = [dock.widget() for dock in viewer.window._wrapped_dock_widgets.values()]
    return next(widget for widget in docks if isinstance(widget, SegmentWidget))


@pytest.mark.parametrize("via", ["add_plugin_dock_widget", "plugins_menu"])
def test_plugin_dock_embeds_once_then_canvas_clicks_segment(qtbot, make_napari_viewer, via):
    """Opened as napari opens it (a proxy viewer, whose layers are new objects on every
    access): one embedding, not one after another; real clicks on the canvas add points,
    give a preview, and still do after a commit (the new objects layer is not left active)."""
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer(show=True)
    sample = make_sample((160, 192), seed=4)
    viewer.add_image(sample.image, name="cells")
    widget = open_segment_dock(viewer, via)
    if via == "add_plugin_dock_widget":  # (napari 0.9's menu action hands the real viewer)
        assert type(widget.viewer).__name__ == "PublicOnlyProxy"
    calls = count_embeddings(widget)
    widget.model_combo.setCurrentText("tiny_cells")
    qtbot.mouseClick(widget.embed_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.embeddings is not None, timeout=TIMEOUT)
    qtbot.wait(2500)
    assert len(calls) == 1 and not widget.busy, widget.status.text()
    assert widget.status.text().startswith("Embedding ready (cells)."), widget.status.text()
    precision = expected_auto_label(widget.model.device)  # bf16 (AMX) iff amx_bf16, else fp32
    assert widget.model_label.text() == f"Model: tiny_cells · {precision}"

    points, preview = viewer.layers["raysam points"], viewer.layers["raysam preview"]
    row, col = cell_centre(sample.labels)
    click(qtbot, viewer, row, col)
    qtbot.waitUntil(lambda: len(points.data) == 1, timeout=5000)
    np.testing.assert_allclose(points.data[0], (row, col), atol=1.5)
    assert preview.data[round(row), round(col)] > 0
    press(viewer, "C")
    assert viewer.layers["cells objects"].data.max() == 1
    assert viewer.layers.selection.active.name == "raysam points"
    row, col = cell_centre(sample.labels, index=2)
    click(qtbot, viewer, row, col)  # the next object: a point again, not a pan
    qtbot.waitUntil(lambda: len(points.data) == 1, timeout=5000)
    assert preview.data.any()
    assert len(calls) == 1


def test_changing_the_image_drops_the_old_embedding(qtbot, dock):
    viewer, widget = dock
    embed(qtbot, widget)
    preview, points = viewer.layers["raysam preview"], viewer.layers["raysam points"]
    widget.prompts.add_point(*cell_centre(widget.sample.labels))
    assert preview.data.any()
    other = make_sample((128, 144), seed=7)
    viewer.add_image(other.image, name="other")
    widget.image_combo.setCurrentText("other")
    assert widget.embeddings is None and widget._embedded_for is None
    status = widget.status.text()
    assert "dropped the embedding" in status and "'cells'" in status and "'other'" in status
    assert not preview.data.any() and len(points.data) == 0
    widget.prompts.add_point(20, 20)  # a click before the new embedding: nothing to commit
    assert widget.commit() == [] and "compute the embedding first" in widget.status.text()
    assert "cells objects" not in viewer.layers

    embed(qtbot, widget)
    assert widget._embedded_for.layer.name == "other" and widget.rgb.shape[:2] == (128, 144)
    assert preview.data.shape == (128, 144)
    widget.prompts.add_point(*cell_centre(other.labels))
    assert widget.commit() == [1]
    assert viewer.layers["other objects"].data.shape == (128, 144)
    assert "cells objects" not in viewer.layers


def test_image_changed_while_embedding_is_not_used(qtbot, dock):
    viewer, widget = dock
    viewer.add_image(make_sample((96, 96), seed=3).image, name="other")
    widget.image_combo.setCurrentText("cells")
    assert widget.compute_embedding() is not None
    widget.image_combo.setCurrentText("other")  # while the worker computes 'cells'
    wait(qtbot, widget)
    assert widget.embeddings is None and "'other'" in widget.status.text()


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
