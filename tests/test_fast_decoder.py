"""The fast prompt -> mask path agrees with micro-sam's: same model, embeddings and prompts."""

from __future__ import annotations

import numpy as np
import pytest

from napari_raysam.core.dataset.synthetic import make_sample
from napari_raysam.core.images import to_sam_rgb
from napari_raysam.core.sam import fast_decoder, segment
from napari_raysam.core.sam.embeddings import EmbeddingCache, Tiling
from napari_raysam.core.sam.models import LoadedModel, build_standard_sam

MIN_IOU = 0.99


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module")
def vit_b():
    import torch

    torch.manual_seed(0)
    return LoadedModel("vit_b", "vit_b", build_standard_sam("vit_b").eval(), "cpu")


def _random_tiled(root, shape, tile, halo, channels=256, grid=64, img_size=1024):
    """micro-sam's tiled layout with random features (the decoder cost and maths do not care)."""
    import zarr
    from bioimage_cpp.utils import Blocking

    rng = np.random.default_rng(1)
    group = zarr.open_group(str(root), mode="w").require_group("features")
    group.attrs.update(shape=list(shape), tile_shape=list(tile), halo=list(halo))
    blocking = Blocking([0, 0], list(shape), list(tile))
    for tile_id in range(blocking.number_of_blocks):
        outer = blocking.get_block_with_halo(tile_id, list(halo)).outer_block
        size = [int(e - b) for b, e in zip(outer.begin, outer.end, strict=True)]
        scale = img_size / max(size)
        array = group.create_array(
            str(tile_id), data=rng.standard_normal((1, channels, grid, grid), dtype=np.float32)
        )
        array.attrs.update(input_size=[int(s * scale + 0.5) for s in size], original_size=size)
    return {"features": group, "input_size": None, "original_size": None}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, tiny_model, vit_b):
    """(model, embeddings) pairs: tiny on sample data (whole and tiled), vit_b on random
    features (whole, non-square, and tiled)."""
    tmp = tmp_path_factory.mktemp("emb")
    rgb = to_sam_rgb(make_sample((300, 360), seed=3).image)
    cache = EmbeddingCache(tmp / "cache")
    rng = np.random.default_rng(0)
    features = rng.standard_normal((1, 256, 64, 64), dtype=np.float32)
    return {
        "tiny": (tiny_model, cache.get_or_compute(tiny_model, rgb, Tiling(), precision="fp32")),
        "tiny_tiled": (tiny_model, cache.get_or_compute(
            tiny_model, rgb, Tiling((128, 128), (32, 32)), precision="fp32")),
        "vit_b": (vit_b, {"features": features, "input_size": [1024, 1024],
                          "original_size": [1024, 1024]}),
        "vit_b_nonsquare": (vit_b, {"features": features, "input_size": [717, 1024],
                                    "original_size": [300, 428]}),
        "vit_b_tiled": (vit_b, _random_tiled(tmp / "vb.zarr", (300, 360), (128, 128), (32, 32))),
    }


PROMPTS = {
    "point": {"points": [[60, 70]], "labels": [1]},
    "neg_pos": {"points": [[60, 70], [20, 25], [150, 170]], "labels": [1, 0, 1]},
    "box": {"box": [40, 50, 110, 130]},
    "box_points": {"points": [[70, 90], [45, 55]], "labels": [1, 0], "box": [40, 50, 110, 130]},
    "many_points": {"points": [[60 + 3 * i, 70 + 2 * i] for i in range(12)],  # tokens > head dim
                    "labels": [1, 0] * 6},
    "far_point": {"points": [[200, 250]], "labels": [1]},  # another tile: offsets matter
    "far_box_point": {"points": [[215, 260]], "labels": [1], "box": [180, 220, 260, 300]},
}


def _reference(model, emb, points=None, labels=None, box=None):
    shape = segment._image_shape(emb)
    if box is not None:
        box = segment.check_box(box, shape)
    if points is not None:
        points, labels = segment.check_points(points, labels, shape)
    return segment._segment_micro_sam(model, emb, shape, points, labels, box)


@pytest.mark.parametrize("name", ["tiny", "tiny_tiled", "vit_b", "vit_b_nonsquare", "vit_b_tiled"])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_masks_agree_with_micro_sam(scenes, name, prompt):
    model, emb = scenes[name]
    assert fast_decoder.supports(model.sam)
    ours = segment.segment(model, emb, **PROMPTS[prompt])
    ref = _reference(model, emb, **PROMPTS[prompt])
    assert ours.shape == ref.shape and ours.dtype == bool
    assert iou(ours, ref) >= MIN_IOU


@pytest.mark.parametrize("name", ["tiny", "tiny_tiled", "vit_b", "vit_b_tiled"])
def test_several_boxes_agree(scenes, name):
    model, emb = scenes[name]
    boxes = [[10, 10, 60, 70], [100, 120, 170, 200], [150, 20, 190, 90]]
    ours = segment.segment_boxes(model, emb, boxes)
    for box, mask in zip(boxes, ours, strict=True):
        assert iou(mask, _reference(model, emb, box=box)) >= MIN_IOU


@pytest.mark.parametrize("name", ["tiny", "vit_b", "vit_b_nonsquare"])
def test_multimask_scores_logits_and_best_choice(scenes, name):
    from micro_sam.util import set_precomputed

    model, emb = scenes[name]
    predictor = set_precomputed(model.predictor, emb)
    decoder = fast_decoder.fast_decoder_for(model.sam)
    xy, lab = np.array([[70.0, 60.0]]), np.array([1])
    ref_masks, ref_scores, ref_logits = predictor.predict(
        point_coords=xy, point_labels=lab, multimask_output=True
    )
    masks, scores, logits = decoder.predict(
        emb["features"], emb["input_size"], emb["original_size"], xy, lab, multimask=True
    )
    np.testing.assert_allclose(scores, ref_scores, atol=1e-4)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-3, rtol=1e-4)
    assert int(np.argmax(scores)) == int(np.argmax(ref_scores))
    assert all(iou(a, b) >= MIN_IOU for a, b in zip(masks, ref_masks, strict=True))
    best, _, _ = decoder.predict(emb["features"], emb["input_size"], emb["original_size"], xy,
                                 lab, multimask=True, best_only=True)
    assert best.shape[0] == 1 and iou(best[0], ref_masks[np.argmax(ref_scores)]) >= MIN_IOU


def test_mask_prompt_agrees(scenes):
    from micro_sam.util import set_precomputed

    model, emb = scenes["tiny"]
    predictor = set_precomputed(model.predictor, emb)
    _, _, low = predictor.predict(point_coords=np.array([[70.0, 60.0]]),
                                  point_labels=np.array([1]), multimask_output=False)
    box = np.array([50, 40, 130, 110])
    ref, _, _ = predictor.predict(box=box, mask_input=low, multimask_output=False)
    ours, _, _ = fast_decoder.fast_decoder_for(model.sam).predict(
        emb["features"], emb["input_size"], emb["original_size"], box_xyxy=box, mask_input=low
    )
    assert iou(ours[0], ref[0]) >= MIN_IOU


def test_dense_pe_follows_new_weights():
    import torch

    from napari_raysam.core.sam.models import build_tiny_sam

    sam = build_tiny_sam(seed=0).eval()
    decoder = fast_decoder.FastDecoder(sam)
    before = decoder.dense_pe().clone()
    sam.load_state_dict(build_tiny_sam(seed=5).state_dict())
    after = decoder.dense_pe()
    expected = sam.prompt_encoder.get_dense_pe()[0].flatten(1).t()
    assert not torch.equal(before, after) and torch.allclose(after, expected)


def test_unsupported_decoder_falls_back_to_micro_sam(scenes, monkeypatch):
    model, emb = scenes["tiny"]
    fast = segment.segment(model, emb, **PROMPTS["point"])
    monkeypatch.setattr(fast_decoder, "supports", lambda sam: False)
    assert iou(segment.segment(model, emb, **PROMPTS["point"]), fast) >= MIN_IOU


def test_far_apart_points_on_tiles_give_a_clear_error(scenes):
    model, emb = scenes["tiny_tiled"]
    with pytest.raises(segment.PromptError, match="different image tiles"):
        segment.segment(model, emb, [[5, 5]], [1], box=[250, 300, 290, 350])
