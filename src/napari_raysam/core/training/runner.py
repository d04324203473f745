"""Run a fine-tuning job: checks before anything starts, the TorchTrainer, and the outputs.

Run folder ``<storage>/<run name>/``: ``run.json`` (config, dataset hash), ``metrics.jsonl``
(events), Ray's ``checkpoint_epoch_*`` folders (best + latest), ``embeddings/`` (decoder mode
cache), and at the end ``model.pt``, ``report.json``, ``curves.png``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RaysamError
from .config import TrainConfig, fresh_run_name
from .events import METRICS_FILE, Follower, append_event, read_events

RUN_FILE = "run.json"
BEST_METRIC = "val_miou_box"


@dataclass
class RunOutcome:
    """What a finished run left behind."""

    name: str
    run_dir: Path
    checkpoint: Path
    report: Path
    best_epoch: int | None
    history: list[dict] = field(default_factory=list)
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)


def default_storage() -> Path:
    """``<user cache>/runs`` (``NAPARI_RAYSAM_CACHE`` overrides), as for the local profile."""
    from ..paths import cache_dir

    return cache_dir() / "runs"


def check_dataset(path: str):
    """Open and validate the training set; it needs train and val samples."""
    from ..dataset import validate_dataset

    report = validate_dataset(path)
    if not report.ok:
        raise RaysamError(f"The training set {path} cannot be used:\n{report.text()}")
    ts = report.dataset
    if not ts.split("train"):
        raise RaysamError(f"The training set {path} has no training samples; export more images.")
    if not ts.has_val:
        raise RaysamError(
            f"The training set {path} has no val split, but training evaluates every epoch on "
            "held-out images. Export at least 2 images (planes) so one goes to val."
        )
    return ts


def check_model_spec(spec: str) -> None:
    """Check a model spec before any worker starts: built-in models and files are loaded
    (cheap, with core.models' clear errors); registry names are fetched where training runs."""
    from ..models import load_model, registry_names

    spec = str(spec).strip()
    if spec in registry_names():
        return
    load_model(spec, device="cpu")


def check_storage(storage: Path) -> None:
    try:
        storage.mkdir(parents=True, exist_ok=True)
        probe = storage / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RaysamError(f"The storage folder {storage} is not writable ({exc.strerror or exc}); "
                          "choose another --storage or fix its permissions.") from exc


def resolve_run(storage: Path, name: str | None, content_hash: str) -> tuple[str, Path, bool]:
    """(name, run folder, resumed). An explicit name whose folder exists resumes it only when
    it trained on the same data; no name gives a fresh unique one."""
    if not name:
        name = fresh_run_name()
    run_dir = storage / name
    if not run_dir.exists():
        return name, run_dir, False
    info = run_dir / RUN_FILE
    if not info.is_file():
        raise RaysamError(f"{run_dir} exists but is not a napari-raysam run; choose another "
                          "--name.")
    old = json.loads(info.read_text()).get("dataset_content_hash")
    if old != content_hash:
        raise RaysamError(
            f"The run {name!r} in {storage} was trained on a different training set "
            f"(content hash {str(old)[:12]}..., this one {content_hash[:12]}...). Choose a new "
            "--name (or leave it out) to start a fresh run."
        )
    return name, run_dir, True


def check_resources(config: TrainConfig) -> None:
    """Fail before the trainer starts when the cluster cannot host the workers."""
    import ray

    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 0)), float(res.get("GPU", 0))
    need_cpu = config.workers * config.cpus_per_worker
    need_gpu = config.workers * config.gpus_per_worker
    if need_gpu > gpus:
        raise RaysamError(
            f"{config.workers} worker(s) x {config.gpus_per_worker} GPU need {need_gpu:g} GPUs, "
            f"but the cluster has {gpus:g} GPU(s) and {cpus:g} CPU(s). Use --gpus-per-worker 0 "
            "or a cluster with GPUs."
        )
    if need_cpu > cpus:
        raise RaysamError(
            f"{config.workers} worker(s) x {config.cpus_per_worker:g} CPU need {need_cpu:g} CPUs, "
            f"but the cluster has {cpus:g} CPU(s) and {gpus:g} GPU(s). Use --workers "
            f"{max(1, int(cpus // config.cpus_per_worker))} or fewer."
        )


def ensure_ray(log_to_driver: bool = True) -> None:
    """Attach to RAY_ADDRESS (a Ray Job sets it) or start a local cluster; reuse an existing."""
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", log_to_driver=log_to_driver)


def build_trained_sam(config: TrainConfig, state: dict):
    """Base model + a checkpoint's trained weights, as a plain SAM (LoRA merged)."""
    from ..models import load_model
    from .trainable import merge_lora, setup_mode

    loaded = load_model(config.model, device="cpu")
    setup_mode(loaded.sam, config.mode, config.lora_rank)
    loaded.sam.load_state_dict(state["model"], strict=False)
    if config.mode == "lora":
        merge_lora(loaded.sam)
    for p in loaded.sam.parameters():
        p.requires_grad = True
    return loaded


def run_training(config: TrainConfig, on_event: Callable[[dict], None] | None = None,
                 log_to_driver: bool = True) -> RunOutcome:
    """Check everything, train on Ray, write model.pt/report.json/curves.png.

    ``on_event`` receives every event (start, baseline, epoch, resume, end) as it lands in
    metrics.jsonl. Raises RaysamError for bad input before the trainer starts.
    """
    config = TrainConfig.from_dict(config.to_dict()).validate()
    config.dataset = str(Path(config.dataset).expanduser().resolve())
    ts = check_dataset(config.dataset)
    check_model_spec(config.model)
    if config.mode == "lora":
        from .trainable import require_peft

        require_peft()
    if config.storage and "://" in config.storage and not config.storage.startswith("file://"):
        raise RaysamError(f"Storage {config.storage!r}: only local or shared (NFS) folders are "
                          "supported for training runs so far; give a folder path.")
    if config.storage and config.storage.startswith("file://"):
        config.storage = config.storage[len("file://"):]
    storage = Path(config.storage).expanduser().resolve() if config.storage else default_storage()
    check_storage(storage)
    config.storage = str(storage)
    name, run_dir, resumed = resolve_run(storage, config.name, ts.content_hash)
    config.name = name
    ensure_ray(log_to_driver)
    check_resources(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resumed:
        (run_dir / RUN_FILE).write_text(json.dumps(
            {"name": name, "dataset_content_hash": ts.content_hash, "config": config.to_dict()},
            indent=1))
    offset = (run_dir / METRICS_FILE).stat().st_size if (run_dir / METRICS_FILE).exists() else 0
    follower = Follower(run_dir, on_event or (lambda e: None), offset)
    follower.start()
    append_event(run_dir, {"event": "start", "run": name, "run_dir": str(run_dir),
                           "dataset": config.dataset, "content_hash": ts.content_hash,
                           "model": config.model, "mode": config.mode, "workers": config.workers,
                           "epochs": config.epochs, "resumed": resumed})
    try:
        result = _fit(config, run_dir)
        outcome = _finish(config, run_dir, result, ts.content_hash)
    except BaseException as exc:
        append_event(run_dir, {"event": "end", "status": "error", "error": str(exc)})
        follower.stop()
        if isinstance(exc, RaysamError | KeyboardInterrupt):
            raise
        raise RaysamError(f"Training failed: {exc}. See the log above; metrics so far are in "
                          f"{run_dir / METRICS_FILE}.") from exc
    append_event(run_dir, {"event": "end", "status": "ok", "checkpoint": str(outcome.checkpoint),
                           "report": str(outcome.report), "best_epoch": outcome.best_epoch,
                           "run": name, **{k: outcome.after.get(k) for k in
                                           ("val_miou_point", "val_miou_box")}})
    follower.stop()
    return outcome


def _fit(config: TrainConfig, run_dir: Path):
    """The TorchTrainer; ``fit`` runs in a thread so the caller keeps its signal handlers."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .loop import train_loop_per_worker

    resources = {"CPU": config.cpus_per_worker}
    if config.gpus_per_worker:
        resources["GPU"] = config.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.to_dict(), "run_dir": str(run_dir)},
        scaling_config=ScalingConfig(num_workers=config.workers,
                                     use_gpu=config.gpus_per_worker > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=config.name, storage_path=config.storage,
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=
                                               BEST_METRIC, checkpoint_score_order="max"),
        ),
    )
    box: dict = {}

    def target():
        try:
            box["result"] = trainer.fit()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="raysam-fit", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def _finish(config: TrainConfig, run_dir: Path, result, content_hash: str) -> RunOutcome:
    import torch

    from ..models import save_checkpoint
    from .loop import STATE_FILE
    from .report import write_curves, write_report

    ranked = [(m.get(BEST_METRIC, -1.0), c) for c, m in (result.best_checkpoints or [])]
    ckpt = max(ranked, key=lambda t: t[0])[1] if ranked else result.checkpoint
    latest = result.checkpoint or ckpt
    with latest.as_directory() as folder:
        history = torch.load(Path(folder) / STATE_FILE, weights_only=True)["history"]
    with ckpt.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    before = state["baseline"]
    best_epoch = int(state["epoch"])
    after = next(h for h in history if h["epoch"] == best_epoch)
    loaded = build_trained_sam(config, state)
    lineage = _lineage(config, content_hash, history, before, best_epoch=best_epoch)
    model_path = save_checkpoint(run_dir / "model.pt", loaded.sam, loaded.model_type,
                                 tiny_config=loaded.tiny_config, lineage=lineage)
    report = write_report(run_dir, before, after, best_epoch, history,
                          {"run": config.name, "checkpoint": str(model_path),
                           "base_model": config.model, "mode": config.mode,
                           "dataset_content_hash": content_hash})
    write_curves(run_dir, before, history)
    return RunOutcome(config.name, run_dir, model_path, report, best_epoch, history, before, after)


def _lineage(config: TrainConfig, content_hash: str, history: list, baseline, **extra) -> dict:
    """What a fine-tuned checkpoint records about how it was made (our one lineage format)."""
    return {"base_model": config.model, "mode": config.mode, "run": config.name,
            "dataset": config.dataset, "dataset_content_hash": content_hash,
            "config": config.to_dict(), "metrics": history, "baseline": baseline,
            "versions": _versions(), **extra}


def save_partial_model(config: TrainConfig, state: dict, path: str | Path, content_hash: str,
                       checkpoint: str, run_state: str) -> Path:
    """model.pt from a Ray checkpoint of a run that never finished (failed or cancelled):
    the base model plus the checkpoint's weights; lineage says ``partial`` and which epoch."""
    from ..models import save_checkpoint

    loaded = build_trained_sam(config, state)
    epoch = int(state["epoch"])
    lineage = _lineage(config, content_hash, list(state.get("history", [])),
                       state.get("baseline"), best_epoch=None, partial=True, epoch=epoch,
                       checkpoint=checkpoint, run_state=run_state)
    return save_checkpoint(path, loaded.sam, loaded.model_type, tiny_config=loaded.tiny_config,
                           lineage=lineage)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("napari-raysam", "torch", "ray", "micro-sam", "segment-anything-py"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


__all__ = ["RunOutcome", "run_training", "read_events", "check_resources", "resolve_run",
           "save_partial_model"]
