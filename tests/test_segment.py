import numpy as np
import pytest

from napari_raysam.core.dataset.synthetic import make_sample
from napari_raysam.core.images import to_sam_rgb
from napari_raysam.core.sam import segment
from napari_raysam.core.sam.embeddings import EmbeddingCache
from napari_raysam.core.sam.segment import PromptError


@pytest.fixture
def scene(tmp_path, tiny_model):
    sample = make_sample((192, 224), seed=11)
    rgb = to_sam_rgb(sample.image)
    emb = EmbeddingCache(tmp_path).get_or_compute(tiny_model, rgb, precision="fp32")
    return sample, rgb, emb


def test_points_box_and_both_give_masks(tiny_model, scene):
    _, _, emb = scene
    by_point = segment.segment(tiny_model, emb, [[50, 60]], [1])
    by_box = segment.segment(tiny_model, emb, box=[30, 40, 80, 90])
    both = segment.segment(tiny_model, emb, [[50, 60], [10, 10]], [1, 0], box=[30, 40, 80, 90])
    for mask in (by_point, by_box, both):
        assert mask.shape == (192, 224) and mask.dtype == bool


def test_several_boxes_give_several_masks(tiny_model, scene):
    masks = segment.segment_boxes(tiny_model, scene[2], [[10, 10, 50, 50], [100, 100, 150, 180]])
    assert len(masks) == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"points": [[500, 10]], "labels": [1]}, "outside"),
        ({"points": [[-1, 10]], "labels": [1]}, "outside"),
        ({"box": [10, 10, 10, 50]}, "no area"),
        ({"box": [300, 300, 400, 400]}, "no area"),
        ({"points": [[5, 5]], "labels": [0]}, "Only negative"),
        ({}, "No prompts"),
        ({"points": [[5, 5], [6, 6]], "labels": [1]}, "one sign per point"),
        ({"points": np.full((10_000, 2), 5.0), "labels": np.ones(10_000)}, "at most"),
    ],
)
def test_bad_prompts(tiny_model, scene, kwargs, match):
    with pytest.raises(PromptError, match=match):
        segment.segment(tiny_model, scene[2], **kwargs)


def test_box_is_clipped_to_image(tiny_model, scene):
    mask = segment.segment(tiny_model, scene[2], box=[-20, -20, 60, 60])
    assert mask.shape == (192, 224)


def test_automatic_segmentation_returns_labels(tiny_model, scene):
    _, rgb, emb = scene
    steps = []
    labels = segment.automatic(tiny_model, rgb, emb, progress=lambda d, t: steps.append(d))
    assert labels.shape == (192, 224) and labels.dtype == np.uint32 and steps[-1] == 2


def test_mask_generator_thresholds_tuned_for_a_model_come_from_its_lineage():
    from types import SimpleNamespace

    assert segment.amg_settings(SimpleNamespace(lineage=None)) == segment.AMG_DEFAULTS
    tuned = SimpleNamespace(lineage={"automatic": {"pred_iou_thresh": 0.7,
                                                   "box_nms_thresh": 0.4, "val_f1": 0.9}})
    assert segment.amg_settings(tuned) == {"pred_iou_thresh": 0.7, "box_nms_thresh": 0.4,
                                           "stability_score_thresh": 0.6}


def test_prompts_reach_sam_in_xy_order(tiny_model, scene, monkeypatch):
    """napari gives (row, col); SAM wants (x, y): a swap would segment the wrong place."""
    from napari_raysam.core.sam.fast_decoder import fast_decoder_for

    seen = {}
    decoder = fast_decoder_for(tiny_model.sam)
    real = decoder.predict

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(decoder, "predict", spy)
    segment.segment(tiny_model, scene[2], [[30, 150]], [1])
    np.testing.assert_allclose(seen["point_coords_xy"], [[150, 30]])
    segment.segment(tiny_model, scene[2], box=[10, 20, 60, 120])
    np.testing.assert_allclose(np.ravel(seen["box_xyxy"]), [20, 10, 120, 60])


def test_model_with_decoder_uses_instance_segmentation_decoder(tmp_path, scene):
    """A checkpoint with micro-sam's decoder_state gets AIS; it survives our save/load."""
    from micro_sam.instance_segmentation import get_unetr

    from napari_raysam.core.sam import models

    sam = models.build_tiny_sam(seed=0)
    unetr = get_unetr(sam.image_encoder, None, "cpu")
    decoder_state = {k: v for k, v in unetr.state_dict().items() if not k.startswith("encoder")}
    path = models.save_checkpoint(tmp_path / "ais.pt", sam, "tiny", models.TinyConfig(),
                                  decoder_state=decoder_state)
    model = models.load_model(str(path), device="cpu")
    assert model.decoder_state is not None and model.ais_decoder is not None
    calls = []
    real = model.ais_decoder.forward
    model.ais_decoder.forward = lambda *a, **k: calls.append(1) or real(*a, **k)
    _, rgb, emb = scene
    labels = segment.automatic(model, rgb, emb)
    assert labels.shape == (192, 224) and calls  # the AIS decoder ran


def test_drop_small_objects_renumbers():
    labels = np.zeros((10, 10), np.uint32)
    labels[0, 0] = 5  # 1 px
    labels[2:6, 2:6] = 9  # 16 px
    labels[7:10, 7:10] = 3  # 9 px
    out = segment.drop_small_objects(labels, 9)
    assert sorted(np.unique(out)) == [0, 1, 2] and out[0, 0] == 0
    assert (out[2:6, 2:6] == 2).all() and (out[7:10, 7:10] == 1).all()
