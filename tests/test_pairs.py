"""Which image layer goes with which labels layer, and the plan of the checked pairs (no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_raysam.core.dataset.pairs import (
    ImageLayer,
    LabelsLayer,
    PairSource,
    default_pairs,
    fitting_pairs,
    pair_inputs,
    plan_pairs,
)
from napari_raysam.core.dataset.synthetic import make_sample
from napari_raysam.core.errors import RaysamError


def test_labels_fit_the_image_without_its_channels():
    assert ImageLayer("g", (5, 64, 64)).fits((5, 64, 64))
    assert not ImageLayer("g", (5, 64, 64)).fits((64, 64))
    assert ImageLayer("rgb", (64, 64, 3), rgb=True).fits((64, 64))
    zcyx = ImageLayer("zc", (5, 2, 64, 64), channel_axis=1)
    assert zcyx.spatial == (5, 64, 64) and zcyx.fits((5, 64, 64))
    assert zcyx.fits((5, 1, 64, 64))  # the Segment dock's objects keep C with length 1
    assert not zcyx.fits((5, 2, 64, 64))
    assert ImageLayer("c", (4, 64, 64), channel_axis=-3).channels == 0


def test_fitting_pairs_by_shape():
    images = [ImageLayer("cells", (64, 64)), ImageLayer("hpa", (4, 64, 64), channel_axis=0)]
    labels = [LabelsLayer("cells labels", (64, 64)), LabelsLayer("small", (32, 32))]
    assert fitting_pairs(images, labels) == [("cells", "cells labels"), ("hpa", "cells labels")]


def test_default_pairs_by_name_then_unclaimed():
    pairs = [("cells", "cells labels"), ("hpa", "cells labels"), ("cells", "Labels"),
             ("hpa", "Labels"), ("rgb", "Labels2")]
    # named labels go with their image only; "Labels" fits two images: ticked for none;
    # "Labels2" fits only rgb and nobody claims it
    assert default_pairs(pairs, {}) == {("cells", "cells labels"), ("rgb", "Labels2")}
    # the longest image name a labels name starts with owns it
    assert default_pairs([("a", "ab labels"), ("ab", "ab labels")], {}) == {("ab", "ab labels")}
    # the Segment dock's objects are preferred over other labels named after the image
    both = [("cells", "cells ground truth"), ("cells", "cells objects")]
    assert default_pairs(both, {}) == {("cells", "cells objects")}
    # a user's tick for an image wins; a user's untick alone does not stop the default
    assert default_pairs(both, {("cells", "cells ground truth"): True}) == set()
    assert default_pairs(both, {("cells", "cells objects"): False}) == {("cells", "cells objects")}


def test_pair_inputs_all_or_current_plane_and_copies():
    samples = [make_sample((64, 64), seed=s) for s in (1, 2, 3)]
    image = np.stack([s.image for s in samples])
    labels = np.stack([s.labels for s in samples]).astype(np.uint16)
    labels[1] = 0
    layer = ImageLayer("stack", image.shape)
    inputs, notes = pair_inputs([PairSource(image, labels, layer)])
    assert [i.plane for i in inputs] == [0, 2] and notes == ["stack: plane(s) 1 have no "
                                                             "objects (skipped)"]
    labels[2] = 0  # painting after the snapshot does not change it
    assert inputs[1].labels.any()
    inputs, _ = pair_inputs([PairSource(image, labels, layer, step=(0, 0, 0))])
    assert [i.plane for i in inputs] == [0]
    with pytest.raises(RaysamError, match="check at least one"):
        pair_inputs([])


def test_plan_pairs_checks_before_writing(tmp_path):
    sample = make_sample((64, 64), seed=4)
    source = PairSource(sample.image, sample.labels, ImageLayer("a", sample.image.shape))
    with pytest.raises(RaysamError, match="destination"):
        plan_pairs(" ", [source], "new", 0, 0.2)
    result = plan_pairs(str(tmp_path / "set"), [source], "new", 0, 0.2)
    assert result.plan.n_samples == 1 and not (tmp_path / "set").exists()
    assert result.split_warning and result.text().startswith("Will create")
    assert result.split_warning in result.text()
