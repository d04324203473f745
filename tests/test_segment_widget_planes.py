"""The Segment dock on the image it is given, in a real napari viewer (Xvfb): the viewed plane of
a stack, channels, the objects and prompt layers' layout, the dock opened as napari opens it, and
the image changing under it."""

import numpy as np
import pytest

from hardware_helpers import expected_auto_label
from napari_raysam.core.dataset.synthetic import make_sample
from napari_raysam.core.sam.embeddings import EmbeddingCache
from segment_helpers import TIMEOUT, cell_centre, click, count_embeddings, embed, press, wait


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


