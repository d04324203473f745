"""Bad-input matrix rows that enter through the docks (real viewer under Xvfb).

Rows already covered in core/CLI tests are referenced from docs/reliability.md, not repeated.
Every error row checks: the message names the problem and the fix (keywords), it is raised
before work starts (nothing cached or written), the dock shows it in its status label (no
traceback dialog) and napari keeps working (``viewer.layers`` usable afterwards).
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_raysam._qt.prompt_layers import BOXES, POINTS, PREVIEW
from napari_raysam.core.dataset.synthetic import make_sample
from napari_raysam.core.sam.embeddings import EmbeddingCache

TIMEOUT = 60_000


def is_error(widget) -> bool:
    return "e05050" in widget.status.styleSheet()


def napari_alive(viewer) -> None:
    """The viewer still accepts layer operations after the error."""
    layer = viewer.add_points(np.zeros((1, 2)), name="alive probe")
    assert "alive probe" in viewer.layers
    viewer.layers.remove(layer)


def entries(cache: EmbeddingCache) -> int:
    return len(cache.entries())


def _cells(shape=(64, 64), seed=0) -> np.ndarray:
    return make_sample(shape, seed=seed).image


# --- Segment dock: images -----------------------------------------------------------------

def _ome_5d():
    """T, Z, C, Y, X with two channels (what an OME-TIFF reader hands over)."""
    planes = [[_cells(seed=t * 3 + z) for z in range(3)] for t in range(2)]
    stack = np.stack([np.stack(p) for p in planes])  # T, Z, Y, X
    return np.stack([stack, stack[..., ::-1]], axis=2).astype(np.uint16)  # T, Z, C, Y, X


def _add(viewer, case: str):
    """Add the case's layer; returns (layer, expected error keywords or None, steps to view)."""
    match case:
        case "5d-ome-tzcyx":
            layer = viewer.add_image(_ome_5d(), name="img", metadata={
                "raysam_channel_axis": 2, "channel_names": ["nuclei", "cyto"]})
            return layer, None, {0: 1, 1: 2}
        case "5d-ome-no-channel-metadata":  # channels treated as a slider: one channel a plane
            return viewer.add_image(_ome_5d(), name="img"), None, {2: 1}
        case "3d-volume-viewed-plane":
            vol = np.stack([_cells(seed=s) for s in range(4)])
            return viewer.add_image(vol, name="img"), None, {0: 3}
        case "rgba":
            rgba = np.dstack([np.repeat(_cells()[..., None], 3, -1).clip(0, 1) * 255,
                              np.full((64, 64), 255)]).astype(np.uint8)
            return viewer.add_image(rgba, name="img", rgb=True), None, {}
        case "1x1":
            return viewer.add_image(np.ones((1, 1), np.float32), name="img"), \
                ["1x1", "at least 2x2"], {}
        case "1-pixel-high":
            return viewer.add_image(np.ones((1, 50), np.float32), name="img"), \
                ["at least 2x2"], {}
        case "3d-display":
            viewer.add_image(np.stack([_cells(seed=s) for s in range(4)]), name="img")
            viewer.dims.ndisplay = 3
            return viewer.layers["img"], ["2D view"], {}
        case "volume-transposed-axes":  # viewing Z-X planes of a Z, Y, X volume
            viewer.add_image(np.stack([_cells(seed=s) for s in range(4)]), name="img")
            viewer.dims.order = (1, 0, 2)
            return viewer.layers["img"], ["axis order", "Y, X"], {}
        case "bad-channel-axis-metadata":
            vol = np.stack([_cells(seed=s) for s in range(2)])
            return viewer.add_image(vol, name="img", metadata={"raysam_channel_axis": 2}), \
                ["Channel axis 2", "before the two image axes"], {}
        case "channel-index-too-high":
            hpa = make_sample((64, 64), channels=4, seed=2).image
            return viewer.add_image(hpa, name="img", metadata={"raysam_channel_axis": 0}), \
                ["do not exist", "4 channels"], {}
        case "channels-not-numbers":
            return viewer.add_image(_cells(), name="img"), ["not numbers", "2,0,3"], {}
    raise AssertionError(case)


PLANES = {"5d-ome-tzcyx": (1, 2), "5d-ome-no-channel-metadata": (0, 1, 1),
          "3d-volume-viewed-plane": (3,), "rgba": ()}
SEGMENT_IMAGE_CASES = ["5d-ome-tzcyx", "5d-ome-no-channel-metadata", "3d-volume-viewed-plane",
                       "rgba", "1x1", "1-pixel-high", "3d-display", "volume-transposed-axes",
                       "bad-channel-axis-metadata", "channel-index-too-high",
                       "channels-not-numbers"]


@pytest.mark.parametrize("case", SEGMENT_IMAGE_CASES)
def test_segment_dock_image_inputs(qtbot, make_napari_viewer, tmp_path, case):
    from napari_raysam._qt.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    layer, expected, steps = _add(viewer, case)
    cache = EmbeddingCache(tmp_path / "emb")
    widget = SegmentWidget(viewer, cache=cache)
    widget.model_combo.setCurrentText("tiny")
    widget.channels_edit.setText({"channel-index-too-high": "7",
                                  "channels-not-numbers": "a,b"}.get(case, ""))
    for axis, value in steps.items():
        viewer.dims.set_current_step(axis, value)
    worker = widget.compute_embedding()
    if expected is not None:
        assert worker is None  # refused synchronously, before any worker starts
        text = widget.status.text()
        assert is_error(widget) and all(k in text for k in expected), text
        assert entries(cache) == 0 and widget.embeddings is None
        # no objects layer made; the prompt layers (made when the dock opened) are untouched
        assert [la.name for la in viewer.layers] == ["img", PREVIEW, BOXES, POINTS]
        assert viewer.layers[PREVIEW].data.shape == (1, 1)
        napari_alive(viewer)
        return
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    assert widget.embeddings is not None, widget.status.text()
    assert widget.rgb.shape == (64, 64, 3)
    assert widget._embedded_for[1] == PLANES[case]  # the plane being viewed
    widget.prompts.add_point(32, 32)
    assert widget.commit() == [1], widget.status.text()
    objects = viewer.layers["img objects"].data
    channel_axis = layer.metadata.get("raysam_channel_axis")
    spatial = [1 if i == channel_axis else s for i, s in enumerate(layer.data.shape)
               if i != channel_axis or channel_axis > 0]  # a later C axis stays, length 1
    assert list(objects.shape) == (spatial[:-1] if layer.rgb else spatial)
    assert np.count_nonzero(np.unique(objects)) == 1
    napari_alive(viewer)


# --- Segment dock: prompts and models ----------------------------------------------------

@pytest.fixture
def embedded(qtbot, make_napari_viewer, tmp_path):
    from napari_raysam._qt.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    viewer.add_image(_cells((96, 96), seed=4), name="img")
    widget = SegmentWidget(viewer, cache=EmbeddingCache(tmp_path / "emb"))
    widget.model_combo.setCurrentText("tiny")
    widget.compute_embedding()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    assert widget.embeddings is not None, widget.status.text()
    return viewer, widget


@pytest.mark.parametrize("case,expected", [
    ("outside-image", ["outside", "click inside"]),
    ("10000-points", ["10000 point prompts", "at most 1000", "Shift-C"]),
    ("only-negative", ["Only negative", "positive point"]),
])
def test_segment_dock_prompt_inputs(embedded, case, expected):
    viewer, widget = embedded
    points = viewer.layers["raysam points"]
    if case == "outside-image":
        widget.prompts.add_point(-5, 500)
    elif case == "10000-points":
        points.data = np.random.default_rng(0).uniform(0, 95, (10_000, 2))
    else:
        widget.toggle_sign()
        widget.prompts.add_point(40, 40)
    text = widget.status.text()
    assert is_error(widget) and all(k in text for k in expected), text
    assert viewer.layers["raysam preview"].data.max() == 0  # no stale mask left to commit
    assert widget.commit() == [] and "img objects" not in viewer.layers
    napari_alive(viewer)


def _model_file(case: str, path):
    import torch

    from napari_raysam.core.sam import models

    if case == "html-page":
        path.write_text("<!DOCTYPE html><html><body>502 Bad Gateway</body></html>")
    elif case == "other-architecture":
        sam = models.build_tiny_sam(models.TinyConfig(encoder_dim=32), seed=0)
        models.save_checkpoint(path, sam, "tiny", models.TinyConfig())
    elif case == "truncated":
        full = models.save_checkpoint(path.with_suffix(".full"), models.build_tiny_sam(), "tiny",
                                      models.TinyConfig())
        path.write_bytes(full.read_bytes()[:4096])
    elif case == "pickle-with-code":
        torch.save({"model_state": {}, "x": _Evil(str(path.parent / "pwned"))}, path)
    elif case == "missing":
        pass
    return path


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.target),))


@pytest.mark.parametrize("case,expected", [
    ("html-page", ["web page", "download the checkpoint again"]),
    ("other-architecture", ["does not match", "another model", "pick the matching one"]),
    ("truncated", ["truncated or corrupt", "again"]),
    ("pickle-with-code", ["not loaded for safety", "export_custom_sam_model"]),
    ("missing", ["not found", "Check the path"]),
])
def test_segment_dock_bad_model_files(qtbot, make_napari_viewer, tmp_path, case, expected):
    from napari_raysam._qt.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    viewer.add_image(_cells(), name="img")
    cache = EmbeddingCache(tmp_path / "emb")
    widget = SegmentWidget(viewer, cache=cache)
    (tmp_path / "models").mkdir()
    path = _model_file(case, tmp_path / "models" / "model.pt")
    widget.model_combo.setCurrentText(str(path))
    assert widget.compute_embedding() is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    text = widget.status.text()
    assert is_error(widget) and all(k in text for k in expected), text
    assert widget.embeddings is None and widget.model is None and entries(cache) == 0
    assert not (tmp_path / "models" / "pwned").exists()
    napari_alive(viewer)


# --- Export dock ---------------------------------------------------------------------------

def test_napari_itself_refuses_float_labels_and_empty_images(make_napari_viewer):
    """These never reach a dock: napari refuses the layer (the core checks cover files)."""
    viewer = make_napari_viewer()
    with pytest.raises(TypeError, match="Only integer types"):
        viewer.add_labels(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError):
        viewer.add_image(np.zeros((0, 0)))
    napari_alive(viewer)


def test_objects_of_a_zcyx_image_show_on_the_viewed_plane(qtbot, make_napari_viewer, tmp_path):
    """Gap G1 (fixed): the objects layer keeps C with length 1, so it aligns with the image."""
    from napari_raysam._qt.export_widget import ExportWidget
    from napari_raysam._qt.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    zcyx = np.stack([np.stack([_cells(seed=z), _cells(seed=z + 5)]) for z in range(3)])
    viewer.add_image(zcyx, name="img", metadata={"raysam_channel_axis": 1})
    widget = SegmentWidget(viewer, cache=EmbeddingCache(tmp_path / "emb"))
    widget.model_combo.setCurrentText("tiny")
    viewer.dims.set_current_step(0, 2)
    viewer.dims.set_current_step(1, 0)
    widget.compute_embedding()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    widget.prompts.add_point(32, 32)
    assert widget.commit() == [1]
    objects = viewer.layers["img objects"]
    assert objects.data.shape == (3, 1, 64, 64)  # C kept with length 1: axes align with img
    assert objects.data[2].any() and not objects.data[:2].any()  # the data is right ...
    assert objects._slice.image.raw.any()  # ... and napari shows it on the viewed plane
    viewer.dims.set_current_step(1, 1)  # the other channel: the objects still show
    assert objects._slice.image.raw.any()
    viewer.dims.set_current_step(0, 1)  # another Z plane: they do not
    assert not objects._slice.image.raw.any()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)  # it embeds the new plane

    export = ExportWidget(viewer)  # the objects layer exports as Z planes of the image
    assert export.selected_pairs() == [("img", "img objects")]
    export.dest_edit.setText(str(tmp_path / "set"))
    assert export.preview() is not None, export.status.text()
    qtbot.waitUntil(lambda: export.worker is None, timeout=TIMEOUT)
    plan = export.plan
    assert plan is not None, export.status.text()
    assert [p.input.plane for p in plan.samples] == [2] and plan.n_objects == 1
    assert plan.samples[0].image.shape == (2, 64, 64) and plan.samples[0].channel_axis == 0
    np.testing.assert_array_equal(plan.samples[0].labels > 0, objects.data[2, 0] > 0)

    objects.undo()  # the commit is undoable
    assert not objects.data.any()
