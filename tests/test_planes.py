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
