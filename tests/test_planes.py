"""The Segment dock's plane selection and status texts (Qt-free)."""

import numpy as np
import pytest

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.sam import planes


def test_select_plane_2d_stack_and_channels():
    flat = planes.select_plane(2, 2, (0, 0), None)
    assert flat.plane_index == () and flat.index == (slice(None), slice(None))
    rgb = planes.select_plane(2, 3, (0, 0), None)  # RGB: the colour axis is not a slider
    assert rgb.index == (slice(None),) * 3
    stack = planes.select_plane(3, 3, (4, 0, 0), None)
    assert stack.plane_index == (4,) and stack.index[0] == 4 and stack.channel_axis is None
    data = np.arange(2 * 3 * 4 * 5 * 6).reshape(2, 3, 4, 5, 6)  # T,Z,C,Y,X
    zc = planes.select_plane(5, 5, (9, 1, 2, 3, 0, 0), channel_axis=2)  # viewer has 6 dims
    assert zc.plane_index == (1, 2) and zc.channel_axis == 0
    assert data[zc.index].shape == (4, 5, 6)
    with pytest.raises(RaysamError, match="before the two image axes"):
        planes.select_plane(3, 3, (0, 0, 0), channel_axis=2)


def test_describe_plane_has_no_empty_plane():
    assert planes.describe_plane("cells", ()) == "cells"
    assert planes.describe_plane("stack", (2,)) == "stack, plane 2"
    assert planes.describe_plane("movie", (1, 2)) == "movie, plane (1, 2)"
    assert "()" not in planes.ready_text("cells", ())


def test_nothing_to_commit_says_what_is_missing():
    assert "add prompts" in planes.nothing_to_commit(True, False)
    assert "compute the embedding first" in planes.nothing_to_commit(False, False)
    assert "still being computed" in planes.nothing_to_commit(False, True)


def test_model_and_image_texts():
    assert planes.model_text(None, "tiny_cells") == "Model: tiny_cells (loads with the embedding)"
    assert planes.model_text("tiny_cells", "tiny_cells") == "Model: tiny_cells"
    assert planes.model_text("tiny_cells", "run:a") == \
        "Model: tiny_cells (run:a loads with the next embedding)"
    assert planes.model_text("vit_b", "vit_b", "bf16 (AMX)") == "Model: vit_b · bf16 (AMX)"
    assert planes.model_text("vit_b", "run:a", "fp32") == \
        "Model: vit_b · fp32 (run:a loads with the next embedding)"
    assert "'b'" in planes.image_changed_text("a", "b")
    assert "no image layer" in planes.image_changed_text("a", None)


def test_check_view_wants_a_yx_plane_in_2d():
    planes.check_view(2, (0, 1, 2))
    with pytest.raises(RaysamError, match="2D view"):
        planes.check_view(3, (0, 1, 2))
    with pytest.raises(RaysamError, match="axis order"):
        planes.check_view(2, (0, 2, 1))


def test_objects_layout_and_index_keep_a_later_channel_axis():
    # T,Z,C,Y,X: C stays with length 1, spanning (and centred on) the channels
    shape, scale, translate = planes.objects_layout((2, 3, 4, 16, 16), False, 2,
                                                    (1, 2, 0.5, 0.3, 0.3), (0, 1, 10, 0, 0))
    assert shape == (2, 3, 1, 16, 16)
    assert scale == [1, 2, 2.0, 0.3, 0.3] and translate == [0, 1, 10.75, 0, 0]
    assert planes.objects_index((1, 2), 5, 2, 5) == (1, 2, 0)
    # channel first: dropped; RGB: the colour axis is dropped; grayscale stack: kept as is
    assert planes.objects_layout((4, 16, 16), False, 0, (1, 1, 1), (0, 0, 0))[0] == (16, 16)
    assert planes.objects_layout((16, 16, 3), True, None, (1, 1), (0, 0))[0] == (16, 16)
    assert planes.objects_layout((5, 16, 16), False, None, (1, 1, 1), (0, 0, 0))[0] == \
        (5, 16, 16)
    assert planes.objects_index((3,), 3, None, 3) == (3,)
    assert planes.objects_index((), 3, 0, 2) == ()


def test_object_ids_scan_once_per_array():
    data = np.zeros((4, 8, 8), np.uint32)
    data[1, 2, 2] = 5
    ids = planes.ObjectIds()
    assert ids.next_id(data) == 6
    data[0, 0, 0] = 9  # an unreported in-place write is not seen: no rescan of the same array
    assert ids.next_id(data) == 6
    ids.saw(6)
    ids.saw(np.array([2, 12, 0]))  # a brush stroke's values
    assert ids.next_id(data) == 13
    replaced = np.zeros((4, 8, 8), np.uint16)
    replaced[3, 1, 1] = 40  # the layer's data was replaced: scanned again
    assert ids.next_id(replaced) == 41
    assert planes.ObjectIds().next_id(np.zeros((0, 8), np.uint8)) == 1
