"""Fast pure-logic tests of the training package (no Ray)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_raysam.core import events
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.sam import prompts, tiles
from napari_raysam.core.sam.losses import measured_iou, sam_loss
from napari_raysam.core.training import data, report
from napari_raysam.core.training.config import TrainConfig, fresh_run_name


def _labels():
    lab = np.zeros((32, 32), np.uint16)
    lab[2:12, 2:12] = 1  # 100 px
    lab[20:30, 15:25] = 2
    lab[0:2, 30:32] = 3  # 4 px: too small
    return lab


def test_select_objects_skips_tiny_and_caps():
    lab = _labels()
    assert list(prompts.select_objects(lab, None, None, min_px=10)) == [1, 2]
    picked = prompts.select_objects(lab, 1, np.random.default_rng(0), min_px=10)
    assert len(picked) == 1 and picked[0] in (1, 2)


def test_points_boxes_and_centres_lie_on_objects():
    lab = _labels()
    masks = prompts.object_masks(lab, np.array([1, 2]))
    gen = torch.Generator().manual_seed(0)
    pts = prompts.random_points(masks, gen).long()
    for i, (x, y) in enumerate(pts.tolist()):
        assert masks[i, y, x]
    centres = prompts.centre_points(masks.numpy())
    assert centres[0].tolist() in ([6, 6], [7, 7], [6, 7], [7, 6])
    boxes = prompts.boxes_from_masks(masks)
    assert boxes[0].tolist() == [2, 2, 12, 12] and boxes[1].tolist() == [15, 20, 25, 30]
    grown = prompts.boxes_from_masks(masks, 0.1, gen)
    assert (grown[:, :2] <= boxes[:, :2]).all() and (grown[:, 2:] >= boxes[:, 2:]).all()
    assert (grown - boxes).abs().max() <= 1.0 and (grown != boxes).any()


def test_boxes_are_micro_sams_boxes():
    """Training and evaluation boxes follow micro-sam's convention (max exclusive), so a model
    fine-tuned here is prompted as micro-sam's trainer, evaluator and annotator prompt it."""
    from micro_sam.util import get_centers_and_bounding_boxes

    lab = _labels()
    lab[25:27, 0:12] = 4  # thin and elongated: where a pixel per side matters most
    ids = prompts.select_objects(lab, None, None, min_px=10)
    _, theirs = get_centers_and_bounding_boxes(lab)
    expected = [[theirs[i][1], theirs[i][0], theirs[i][3], theirs[i][2]] for i in ids]
    assert prompts.boxes_from_masks(prompts.object_masks(lab, ids)).tolist() == expected


def test_correction_points_target_error_regions():
    target = torch.zeros(1, 20, 20, dtype=torch.bool)
    target[0, 5:15, 5:15] = True
    pred = torch.zeros_like(target)
    pred[0, 5:15, 5:10] = True  # misses the right half
    pred[0, 0:3, 0:3] = True  # adds a false blob
    coords, labels = prompts.correction_points(pred, target, torch.Generator().manual_seed(1))
    (px, py), (nx, ny) = coords[0].long().tolist()
    assert labels.tolist() == [[1, 0]]
    assert target[0, py, px] and not pred[0, py, px]
    assert pred[0, ny, nx] and not target[0, ny, nx]
    # a perfect prediction: positive on the object, negative just outside it
    coords, _ = prompts.correction_points(target.clone(), target, torch.Generator())
    (px, py), (nx, ny) = coords[0].long().tolist()
    assert target[0, py, px] and not target[0, ny, nx]
    assert 2 <= nx <= 17 and 2 <= ny <= 17


def test_shared_choice_is_rank_independent_and_alternates():
    assert prompts.shared_unit(3, "mask", 10) == prompts.shared_unit(3, "mask", 10)
    draws = [prompts.shared_unit(0, "mask", s) < 0.5 for s in range(200)]
    assert 60 < sum(draws) < 140
    assert [prompts.first_prompt_kind(s) for s in range(3)] == ["point", "box", "point"]


def test_loss_and_iou():
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:12, 4:12] = 1
    perfect = (target * 20 - 10).repeat(1, 3, 1, 1)
    perfect[:, 1:] = -10  # masks 2 and 3 empty: best-of-3 still perfect
    iou_pred = torch.tensor([[1.0, 0.0, 0.0]] * 2)
    loss, mask_loss, iou_loss, iou = sam_loss(perfect, iou_pred, target)
    assert float(mask_loss) < 1e-3 and float(iou_loss) < 1e-6
    assert iou[:, 0].tolist() == [1.0, 1.0]
    assert measured_iou(-perfect[:, :1], target).max() == 0


def test_config_validation_and_names():
    with pytest.raises(RaysamError, match="mode"):
        TrainConfig(dataset="x", mode="everything").validate()
    with pytest.raises(RaysamError, match="workers"):
        TrainConfig(dataset="x", workers=0).validate()
    cfg = TrainConfig(dataset="x", epochs=2)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert fresh_run_name() != fresh_run_name()


def test_tiles_dihedral_and_shards():
    assert tiles.tile_origins(256, 256, 256) == [(0, 0)]
    assert tiles.tile_origins(600, 256, 256) == [(0, 0), (172, 0), (344, 0)]
    a = np.arange(12).reshape(3, 4)
    variants = {tiles.dihedral(a, k).tobytes() for k in range(8)}
    assert len(variants) == 8
    assert tiles.crop(a, 2, 2, 4).shape == (4, 4)
    assert data.steps_per_epoch(7, 2, 1) == 4 and data.steps_per_epoch(7, 2, 1, fixed=9) == 9


@pytest.mark.parametrize("where", ["folder", "object store"])
def test_events_dedupe_and_follow(tmp_path, where):
    from napari_raysam.core.storage import Storage

    storage = Storage.open(str(tmp_path) if where == "folder" else "mock:///bucket/runs/r1")
    log = events.EventLog(storage)
    log.append({"event": "start"})
    seen = []
    follower = events.Follower(events.EventLog(storage), seen.append)  # skips what is there
    log.append({"event": "epoch", "epoch": 1})
    log.append({"event": "epoch", "epoch": 1})  # a restarted worker
    log.append({"event": "epoch", "epoch": 2})
    follower.poll()
    follower.poll()  # nothing twice
    assert [e["epoch"] for e in seen] == [1, 2]
    everything = events.EventLog(storage).read_all()
    assert [e["event"] for e in everything] == ["start", "epoch", "epoch"]
    assert all("time" in e for e in everything)
    assert not [n for n, _ in storage.list("events") if ".part-" in n]


def test_events_of_a_legacy_run_are_still_read(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"event": "start"}\n{"event": "epoch", "epoch": 1}\n')
    assert [e["event"] for e in events.read_events(tmp_path)] == ["start", "epoch"]


def test_report_says_when_worse(tmp_path):
    before = {"val_miou_point": 0.6, "val_miou_box": 0.7, "val_miou_corrected": 0.8}
    after = {"val_miou_point": 0.4, "val_miou_box": 0.5, "val_miou_corrected": 0.6}
    kind, text = report.verdict(before, after)
    assert kind == "worse" and "WORSE" in text
    path = report.write_report(tmp_path, before, after, 1, [], {})
    assert json.loads(path.read_text())["verdict"] == "worse"
    assert report.verdict(after, before)[0] == "improved"


def test_lora_merge_matches_wrapped_model():
    pytest.importorskip("micro_sam.models.peft_sam")
    from napari_raysam.core.sam.models import build_tiny_sam
    from napari_raysam.core.training.trainable import merge_lora, setup_mode, trainable_state

    sam = build_tiny_sam(seed=0)
    params = setup_mode(sam, "lora", 4)
    assert params and all(p.requires_grad for p in params)
    torch.manual_seed(1)
    for name, p in sam.image_encoder.named_parameters():
        if "w_b_linear" in name:
            p.data.normal_(0, 0.1)
    assert any("w_a_linear" in k for k in trainable_state(sam))
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        wrapped = sam.image_encoder(x)
        merge_lora(sam)
        merged = sam.image_encoder(x)
    assert torch.allclose(wrapped, merged, atol=1e-4)
    assert not any("linear" in k and "w_" in k for k in sam.state_dict())


def test_single_process_step_learns():
    """The batched step (no Ray) lowers the loss on one image within a few seconds."""
    from napari_raysam.core.dataset.synthetic import make_sample
    from napari_raysam.core.images import to_sam_rgb
    from napari_raysam.core.sam.engine import encode_tiles
    from napari_raysam.core.sam.models import build_tiny_sam
    from napari_raysam.core.training.step import SamStep
    from napari_raysam.core.training.trainable import setup_mode

    sample = make_sample(seed=3)
    rgb, labels = to_sam_rgb(sample.image), sample.labels
    sam = build_tiny_sam(seed=0)
    opt = torch.optim.AdamW(setup_mode(sam, "decoder"), lr=3e-3)
    step = SamStep(sam, frozen_encoder=True)
    with torch.no_grad():
        emb = encode_tiles(sam, torch.from_numpy(rgb)[None])
    masks = prompts.object_masks(labels, prompts.select_objects(labels, 8, None, 10))
    gen, losses = torch.Generator().manual_seed(0), []
    for it in range(40):
        loss, n = step(emb, [masks], prompts.first_prompt_kind(it), 1, gen, 0.0, it % 3 == 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        assert n == len(masks)
    assert np.mean(losses[-6:]) < np.mean(losses[:6]) - 0.05


def test_every_rank_gets_training_data_with_fewer_images_than_workers(tmp_path):
    from napari_raysam.core.dataset import SampleInput, write_dataset
    from napari_raysam.core.dataset.shards import load_shard
    from napari_raysam.core.dataset.synthetic import make_samples

    samples = make_samples(2, shape=(64, 64))
    ts = write_dataset(tmp_path / "two", [SampleInput(s.image, s.labels, f"s{i}")
                                          for i, s in enumerate(samples)])
    assert len(ts.split("train")) == 1
    shards = [load_shard(str(ts.path), "train", rank, 2, at_least_one=True) for rank in (0, 1)]
    assert all(len(shard) == 1 for shard in shards)
    assert load_shard(str(ts.path), "val", 1, 2) == []  # val is never duplicated


def test_training_tiles_of_a_large_image_are_scaled_like_micro_sams_patches(tmp_path):
    """Under min-max a tile of an image larger than the model's input is scaled on its own, as
    micro-sam's loader scales each sampled patch (torch-em's raw_transform) and as tiled
    inference scales each tile: its pixels are ``micro_sam.util._to_image`` of the raw crop.
    Percentile (ours) scales the whole image once; so does a single-tile image."""
    from micro_sam.util import _to_image

    from napari_raysam.core.dataset import SampleInput, write_dataset
    from napari_raysam.core.dataset.shards import load_shard
    from napari_raysam.core.dataset.synthetic import make_samples
    from napari_raysam.core.images import ImagePolicy

    big, small = make_samples(2, shape=(600, 256), seed=2)
    raw = (100 + big.image.astype(np.float32) / big.image.max() * 300).astype(np.uint16)
    raw[:100] += 30000  # a bright band: the tiles below it hold a few whole-image grey levels
    ts = write_dataset(tmp_path / "set", [SampleInput(raw, big.labels, "big"),
                                          SampleInput(small.image[:256], small.labels[:256],
                                                      "small")], val_fraction=0)
    samples = load_shard(str(ts.path), "train")
    i = next(k for k, sample in enumerate(samples) if sample.rgb.shape[0] == 600)
    assert samples[i].source is not None
    differs = 0
    for y0, x0 in tiles.tile_origins(600, 256, 256):
        rgb, _ = tiles.tile_arrays(samples, tiles.Tile(i, y0, x0), 256)
        np.testing.assert_array_equal(rgb, _to_image(raw[y0:y0 + 256, x0:x0 + 256]))
        differs += not np.array_equal(rgb, tiles.crop(samples[i].rgb, y0, x0, 256))
    assert differs >= 2
    j = 1 - i  # one tile: the whole image's own scaling, no raw copy kept with tile_size
    rgb, _ = tiles.tile_arrays(samples, tiles.Tile(j, 0, 0), 256)
    np.testing.assert_array_equal(rgb, samples[j].rgb)
    sized = load_shard(str(ts.path), "train", tile_size=256)
    assert sized[j].source is None and sized[i].source is not None
    # decoder mode's tile-embedding cache never serves a tile scaled the old way
    cache = data.TileEmbeddingCache(None, lambda x: torch.zeros((1, 4, 2, 2)))
    cache.get(sized, tiles.Tile(i, 172, 0), 256)
    cache.get(sized, tiles.Tile(j, 0, 0), 256)
    own = [k.endswith("_own-scale") for k in cache.memory]
    assert sorted(own) == [False, True]
    percentile = load_shard(str(ts.path), "train",
                            normalisation=ImagePolicy(scaling="percentile").normalisation())
    assert percentile[i].source is None
    rgb, _ = tiles.tile_arrays(percentile, tiles.Tile(i, 344, 0), 256)
    np.testing.assert_array_equal(rgb, tiles.crop(percentile[i].rgb, 344, 0, 256))


def test_trainconfig_is_the_one_option_schema():
    """The CLI options, the job's command line and the config come from TrainConfig's fields:
    a parsed command line rebuilds the same config, option_argv round-trips through it."""
    import argparse

    from napari_raysam.core.training.config import (
        TrainConfig,
        from_namespace,
        option_argv,
        option_fields,
    )
    from napari_raysam.train import add_train_arguments

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    options = {"model": "tiny", "mode": "full", "workers": 2, "epochs": 3, "lr": 0.01,
               "steps_per_epoch": 4, "max_failures": 0, "seed": 7,
               "normalisation": "percentile"}
    argv = option_argv(options)
    config = from_namespace(parser.parse_args(["ds", *argv]))
    assert config == TrainConfig(dataset="ds", **options)
    assert {f.name for f in option_fields()} >= set(options) | {"storage", "name"}
    assert "weight_decay" not in {f.name for f in option_fields()}  # not a CLI option
    with pytest.raises(RaysamError, match="not a training option"):
        option_argv({"storage": "/x"}, reserved=("storage",))


def test_one_verdict_rule_decided_by_the_score_that_picks_the_checkpoint(tmp_path):
    before = {"val_miou_point": 0.6, "val_miou_box": 0.70, "val_miou_corrected": 0.8}
    up_box_down_point = {"val_miou_point": 0.3, "val_miou_box": 0.75, "val_miou_corrected": 0.7}
    assert report.BEST_METRIC == "val_miou_box"
    assert report.verdict(before, up_box_down_point)[0] == "improved"  # the mean fell: box rules
    assert report.verdict(up_box_down_point, before)[0] == "worse"
    same_box = {**up_box_down_point, "val_miou_box": 0.703}
    kind, text = report.verdict(before, same_box)
    assert kind == "no change" and "val box mIoU" in text
    assert report.VERDICT_LABELS[kind] == "no change" and report.VERDICT_LABELS["worse"] == "WORSE"
    assert report.verdict(before, {})[0] == "no val split"
    history = [{"epoch": 1, "train_loss": 1.0, "val_miou_box": 0.72},
               {"epoch": 2, "train_loss": 0.9, "val_miou_box": 0.75},
               {"epoch": 3, "train_loss": 0.8, "val_miou_box": 0.75, "stopped_early": True}]
    path = report.write_report(tmp_path, before, up_box_down_point, 2, history, {})
    saved = json.loads(path.read_text())
    assert saved["verdict"] == "improved" and saved["best_metric"] == "val_miou_box"
    assert saved["best_epoch"] == 2 and saved["stopped_early"] and saved["epochs_run"] == 3
    assert "epoch 2 of 3" in saved["returned"] and "val box mIoU" in saved["returned"]
    assert report.write_curves(tmp_path, before, history, best=2).stat().st_size > 0


def test_best_epoch_and_early_stopping():
    def hist(*scores):
        return [{"epoch": i + 1, "val_miou_box": s} for i, s in enumerate(scores)]

    assert report.best_epoch(hist(0.5, 0.7, 0.7, 0.6)) == 2  # the earliest of a tie
    assert report.best_epoch([{"epoch": 1}]) is None
    assert not report.should_stop(hist(0.5, 0.7, 0.6), None)
    assert not report.should_stop(hist(0.5, 0.7, 0.6), 2)
    assert report.should_stop(hist(0.5, 0.7, 0.6, 0.65), 2)
    assert not report.should_stop([{"epoch": 1}, {"epoch": 2}], 1)  # no val: never stops
    with pytest.raises(RaysamError, match="patience"):
        TrainConfig(dataset="x", patience=0).validate()
    with pytest.raises(RaysamError, match="lr_schedule"):
        TrainConfig(dataset="x", lr_schedule="cosine").validate()


def test_lr_follows_the_workers_only_when_asked():
    assert TrainConfig(dataset="x", lr=1e-4).scaled_lr(4) == 1e-4  # micro-sam's recipe
    assert TrainConfig(dataset="x", lr=1e-4, lr_scaling="linear").scaled_lr(4) == 4e-4
    assert TrainConfig(dataset="x", lr=1e-4, lr_scaling="sqrt").scaled_lr(4) == 2e-4
    assert TrainConfig(dataset="x", lr=1e-4, lr_scaling="sqrt").scaled_lr(1) == 1e-4
    with pytest.raises(RaysamError, match="lr_scaling 'cubic' is unknown; use one of none"):
        TrainConfig(dataset="x", lr_scaling="cubic").validate()


def test_runs_sized_by_the_data():
    """Epochs left unset: at least 100 samples per epoch (micro-sam's rule) and 5-20 epochs;
    epochs given: one pass per epoch, as before."""
    assert data.plan_run(3, 1, 1, None) == (100, 20)
    assert data.plan_run(3, 2, 1, None) == (50, 20)  # 2 workers share the 100 samples
    assert data.plan_run(250, 1, 1, None) == (250, 8)
    assert data.plan_run(5000, 1, 1, None) == (5000, 5)
    assert data.plan_run(3, 1, 1, None, fixed=4) == (4, 20)
    assert data.plan_run(3, 1, 1, 2) == (3, 2)
    assert TrainConfig(dataset="x").epochs is None


def test_eta_from_the_first_steps():
    eta = events.Eta(steps=10, epochs=3, first=3, every_s=10.0)
    assert eta.left_s(1, 0) is None and not eta.due(now=0.0)
    eta.validated(2.0)
    for _ in range(3):
        eta.stepped(0.5)
    # 27 steps of 0.5 s and 3 validations of 2 s to go
    assert eta.left_s(1, 3) == pytest.approx(27 * 0.5 + 3 * 2.0)
    assert eta.left_s(2, 10, validated=True) == pytest.approx(10 * 0.5 + 2.0)
    assert eta.due(now=1.0) and not eta.due(now=5.0) and eta.due(now=11.5)


def test_a_run_trains_with_and_records_the_base_models_normalisation(tmp_path):
    """None: the base model's (tiny_cells as shipped: percentile; tiny: micro-sam's min-max);
    an explicit choice wins. What the run trains with is what its model.pt records."""
    from napari_raysam.core.images import LEGACY, ImagePolicy
    from napari_raysam.core.sam.models import load_checkpoint, load_model
    from napari_raysam.core.training.config import run_normalisation
    from napari_raysam.core.training.runner import save_partial_model
    from napari_raysam.core.training.trainable import trainable_state

    shipped = load_model("tiny_cells", device="cpu")
    assert run_normalisation(TrainConfig(dataset="x"), shipped.normalisation) == (
        LEGACY.normalisation())
    chosen = TrainConfig(dataset="x", normalisation="minmax")
    assert run_normalisation(chosen, shipped.normalisation) == ImagePolicy().normalisation()
    with pytest.raises(RaysamError, match="normalisation 'zscore' is unknown"):
        TrainConfig(dataset="x", normalisation="zscore").validate()
    state = {"model": trainable_state(shipped.sam), "epoch": 1, "history": [], "baseline": None}
    for cfg, scaling in ((TrainConfig(dataset="x", model="tiny_cells", mode="full"), "percentile"),
                         (TrainConfig(dataset="x", model="tiny", mode="full"), "minmax"),
                         (TrainConfig(dataset="x", model="tiny_cells", mode="full",
                                      normalisation="minmax"), "minmax")):
        path = save_partial_model(cfg, state, tmp_path / f"{cfg.model}-{scaling}.pt", "h", "c",
                                  "FAILED")
        assert load_checkpoint(path, device="cpu").normalisation["scaling"] == scaling
