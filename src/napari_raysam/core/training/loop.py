"""``train_loop_per_worker``: what every Ray Train worker runs.

Per epoch: train on this rank's shard (same number of steps on every rank), validate on this
rank's share of the val split, all-reduce the sums so every rank sees identical metrics, then
``ray.train.report`` (rank 0 attaches the checkpoint) and rank 0 writes the epoch event to the
run's ``events/`` in storage, with progress events (and the job's ETA) in between. The val box
mIoU (``report.BEST_METRIC``) steps the ``plateau`` LR schedule and ends the run early after
``patience`` epochs without a better one; all-reduced, it is the same on every rank, so all stop
together. A restarted worker group resumes from ``ray.train.get_checkpoint()`` (model,
optimizer, schedule, epoch, history), so no epoch is lost or counted twice.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_raysam.core.dataset.shards import load_shard
from napari_raysam.core.events import Eta, EventLog
from napari_raysam.core.images import normalisation_tag
from napari_raysam.core.sam import prompts
from napari_raysam.core.sam.tiles import fixed_tiles, tile_arrays
from napari_raysam.core.training.config import TrainConfig, run_normalisation
from napari_raysam.core.training.data import TileEmbeddingCache, epoch_tiles, plan_run
from napari_raysam.core.training.report import BEST_METRIC, should_stop

STATE_FILE = "state.pt"


def _all_reduce_sum(values: list[float]) -> list[float]:
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def _masks(labels: np.ndarray, n: int | None, rng, min_px: int):
    return prompts.object_masks(labels, prompts.select_objects(labels, n, rng, min_px))


def validate(sam, samples, size: int, cfg: TrainConfig, cache: TileEmbeddingCache | None) -> dict:
    """Val metrics of this rank's share, all-reduced to the mean over all val objects."""
    import torch

    from napari_raysam.core.sam.engine import encode_tiles, evaluate_tile

    sums = np.zeros(5)  # point, box, corrected IoU sums; loss sum; objects
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    with torch.no_grad():
        for tile in fixed_tiles(samples, size, cfg.min_object_px):
            rgb, labels = tile_arrays(samples, tile, size)
            masks = _masks(labels, cfg.eval_objects, None, cfg.min_object_px)
            if cache is not None:
                emb = cache.get(samples, tile, size)[None].to(sam.device)
            else:
                emb = encode_tiles(sam, torch.from_numpy(rgb)[None])
            res = evaluate_tile(sam, emb, masks, cfg.correction_rounds, gen)
            n = len(masks)
            sums += [float(res["point"].sum()), float(res["box"].sum()),
                     float(res["corrected"].sum()), res["loss"] * n, n]
    tot = _all_reduce_sum(sums.tolist())
    if tot[4] == 0:
        return {}  # no val split (or no val objects): nothing measured
    n = tot[4]
    return {"val_miou_point": tot[0] / n, "val_miou_box": tot[1] / n,
            "val_miou_corrected": tot[2] / n, "val_loss": tot[3] / n, "val_objects": int(tot[4])}


def _restore():
    import ray.train
    import torch

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return {}
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)


def _debug_hook(cfg: TrainConfig, epoch: int, rank: int, world: int) -> None:
    if cfg.debug_pid_dir and epoch == 2 and rank == world - 1:
        time.sleep(cfg.debug_pause_s)  # let the controller register epoch 1's checkpoint
        Path(cfg.debug_pid_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.debug_pid_dir) / f"pid-{os.getpid()}").write_text(str(os.getpid()))
        time.sleep(cfg.debug_pause_s)


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry: ``loop_config = {"config": TrainConfig dict, "run": run folder URI}``.
    Inputs in object storage are copied to this node first (:mod:`..node_cache`)."""
    import ray.train
    import ray.train.torch
    import torch
    from ray.train import Checkpoint

    from napari_raysam.core.dataset.on_node import dataset_on_node
    from napari_raysam.core.node_cache import node_cache_dir
    from napari_raysam.core.sam.engine import encode_tiles
    from napari_raysam.core.sam.models import load_model
    from napari_raysam.core.storage import Storage
    from napari_raysam.core.training.step import SamStep
    from napari_raysam.core.training.trainable import setup_mode, trainable_state

    cfg = TrainConfig.from_dict(loop_config["config"])
    events = EventLog(Storage.open(loop_config["run"], side="the cluster"))
    dataset = dataset_on_node(cfg.dataset)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    torch.manual_seed(cfg.seed)
    loaded = load_model(cfg.model, device="cpu")
    sam = loaded.sam
    fingerprint = loaded.encoder_fingerprint
    params = setup_mode(sam, cfg.mode, cfg.lora_rank)
    state = _restore()
    if state:
        sam.load_state_dict(state["model"], strict=False)
    sam.to(device).train()
    model = ray.train.torch.prepare_model(
        SamStep(sam, frozen_encoder=cfg.mode == "decoder"),
        parallel_strategy_kwargs={"find_unused_parameters": True},
    )
    optimizer = torch.optim.AdamW(params, lr=cfg.scaled_lr(world),
                                  weight_decay=cfg.weight_decay)
    scheduler = None
    if cfg.lr_schedule == "plateau":  # micro-sam's default schedule, on our deciding score
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max",
                                                               factor=0.9, patience=3)
    if state:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
    size = int(sam.image_encoder.img_size)
    normalisation = run_normalisation(cfg, loaded.normalisation)
    train = load_shard(dataset, "train", rank, world, at_least_one=True,
                       normalisation=normalisation, tile_size=size)
    val = load_shard(dataset, "val", rank, world, normalisation=normalisation, tile_size=size)
    base = fixed_tiles(train, size, cfg.min_object_px)
    n_tiles = int(_all_reduce_sum([len(base)])[0])
    n_steps, n_epochs = plan_run(n_tiles, world, cfg.images_per_step, cfg.epochs,
                                 cfg.steps_per_epoch)
    eta = Eta(n_steps, n_epochs)
    cache = None
    if cfg.mode == "decoder":
        def compute(x):
            with torch.no_grad():
                return encode_tiles(sam, x)
        folder = f"{fingerprint[:16]}-{normalisation_tag(normalisation)}"
        cache = TileEmbeddingCache(node_cache_dir() / "embeddings" / folder, compute)
    history = list(state.get("history", []))
    baseline = state.get("baseline")
    start = int(state.get("epoch", 0)) + 1
    if baseline is None:
        t_val = time.perf_counter()
        baseline = validate(sam, val, size, cfg, cache)
        eta.validated(time.perf_counter() - t_val)
        if rank == 0 and baseline:
            events.append({"event": "baseline", **baseline})
    elif rank == 0:
        events.append({"event": "resume", "from_epoch": start, "epochs": n_epochs})
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    if history and history[-1].get("stopped_early"):
        start = n_epochs + 1  # resumed after the last epoch's report: nothing left to train
    for epoch in range(start, n_epochs + 1):
        _debug_hook(cfg, epoch, rank, world)
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(hash((cfg.seed, rank, epoch)) % 2**62)
        rng = np.random.default_rng([cfg.seed, rank, epoch])
        tiles = epoch_tiles(train, base, size, n_steps * cfg.images_per_step, cfg.mode,
                            cfg.seed, epoch, rank, cfg.min_object_px)
        loss_sum, n_obj = 0.0, 0
        for s in range(n_steps):
            t_step = time.perf_counter()
            batch = tiles[s * cfg.images_per_step:(s + 1) * cfg.images_per_step]
            arrays = [tile_arrays(train, t, size) for t in batch]
            masks = [_masks(lab, cfg.objects_per_image, rng, cfg.min_object_px)
                     for _, lab in arrays]
            if cache is not None:
                x = torch.stack([cache.get(train, t, size) for t in batch])
            else:
                x = torch.from_numpy(np.stack([rgb for rgb, _ in arrays]))
            step_index = (epoch - 1) * n_steps + s
            use_masks = prompts.shared_unit(cfg.seed, "mask", step_index) < cfg.mask_prob
            with autocast:
                loss, n = model(x, masks, prompts.first_prompt_kind(step_index),
                                cfg.correction_rounds, gen, cfg.box_distortion, use_masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum, n_obj = loss_sum + float(loss.detach()), n_obj + n
            eta.stepped(time.perf_counter() - t_step)
            if rank == 0 and s + 1 < n_steps and eta.due():
                events.append({"event": "progress", "epoch": epoch, "epochs": n_epochs,
                               "step": s + 1, "steps": n_steps,
                               "eta_s": round(eta.left_s(epoch, s + 1), 1)})
        train_time = time.perf_counter() - t0
        tot = _all_reduce_sum([loss_sum, n_steps, n_obj, train_time])
        metrics = {"epoch": epoch, "epochs": n_epochs, "steps": n_steps,
                   "train_loss": tot[0] / tot[1], "lr": optimizer.param_groups[0]["lr"]}
        t_val = time.perf_counter()
        metrics.update(validate(sam, val, size, cfg, cache))
        eta.validated(time.perf_counter() - t_val)
        metrics["epoch_time_s"] = time.perf_counter() - t0
        metrics["objects_per_s"] = tot[2] / max(tot[3] / world, 1e-9)
        if scheduler is not None and metrics.get(BEST_METRIC) is not None:
            scheduler.step(metrics[BEST_METRIC])
        stop = epoch < n_epochs and should_stop([*history, metrics], cfg.patience)
        if stop:
            metrics["stopped_early"] = True
        metrics["eta_s"] = 0.0 if stop else round(eta.left_s(epoch, n_steps, validated=True), 1)
        history.append(metrics)
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if rank == 0:
                torch.save({"model": trainable_state(sam), "optimizer": optimizer.state_dict(),
                            "epoch": epoch, "history": history, "baseline": baseline,
                            "scheduler": scheduler.state_dict() if scheduler else None,
                            "mode": cfg.mode, "model_spec": cfg.model},
                           Path(folder) / STATE_FILE)
                checkpoint = Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=checkpoint,
                             checkpoint_dir_name=f"checkpoint_epoch_{epoch:04d}")
        if rank == 0:
            events.append({"event": "epoch", **metrics})
        if stop:
            break
