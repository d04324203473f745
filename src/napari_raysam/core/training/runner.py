"""Run a fine-tuning job: checks before anything starts, the TorchTrainer, and the outputs.

Run folder ``<storage>/<run name>/`` (a local/shared folder or an object-store prefix, through
:mod:`..storage`): ``run.json`` (config, dataset hash), ``events/`` (one object per event),
Ray's ``checkpoint_epoch_*`` folders (best + latest), and at the end ``curves.png``,
``report.json`` and ``model.pt`` (written last). Decoder mode caches embeddings on each node.

model.pt holds the epoch with the best val box mIoU (``report.BEST_METRIC``, the one score that
decides; report.json names it and says why), or the last epoch when the set has no val split.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.events import EventLog, Follower, read_events
from napari_raysam.core.job_env import ensure_ray
from napari_raysam.core.paths import safe_name
from napari_raysam.core.storage import Storage, StorageError, is_remote_uri, local_path, redact
from napari_raysam.core.training.config import TrainConfig, fresh_run_name, run_normalisation
from napari_raysam.core.training.report import BEST_METRIC, NO_VAL

RUN_FILE = "run.json"
NO_VAL_OPTIONS = ("Early stopping (patience) and the plateau LR schedule follow the val box "
                  "mIoU: without a val split they are off for this run.")


@dataclass
class RunOutcome:
    """What a finished run left behind."""

    name: str
    run_dir: str  # the run's folder: a local path or a storage URI
    checkpoint: str
    report: str
    best_epoch: int | None
    history: list[dict] = field(default_factory=list)
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)  # report.json's returned epoch, why, verdict


def default_storage() -> Path:
    """``<user cache>/runs`` (``NAPARI_RAYSAM_CACHE`` overrides), as for the local profile."""
    from napari_raysam.core.paths import cache_dir

    return cache_dir() / "runs"


def check_dataset(path: str):
    """Open and validate the training set (a local folder); it needs train samples. Without
    a val split it trains all the same, with no per-epoch validation (see report.NO_VAL)."""
    from napari_raysam.core.dataset import validate_dataset

    report = validate_dataset(path)
    if not report.ok:
        raise RaysamError(f"The training set {path} cannot be used:\n{report.text()}")
    ts = report.dataset
    if not ts.split("train"):
        if ts.split("val"):  # a test set (val fraction 1): refused, with what to do instead
            raise RaysamError(f"The set {path} cannot be trained on: {ts.split_warning}")
        raise RaysamError(f"The training set {path} has no training samples; export more images.")
    return ts


def check_model_spec(spec: str) -> None:
    """Check a model spec before any worker starts: built-in models and files are loaded
    (cheap, with core.models' clear errors); registry names are fetched where training runs."""
    from napari_raysam.core.sam.models import load_model, registry_names

    spec = str(spec).strip()
    if spec in registry_names():
        return
    load_model(spec, device="cpu")


def open_run_storage(uri: str | None) -> Storage:
    """The runs storage (a folder or an object-store URI), checked writable from here."""
    uri = local_path(uri or str(default_storage()))
    if "://" not in uri:
        uri = str(Path(uri).expanduser().resolve())
    try:
        storage = Storage.open(uri, side="the cluster")
        storage.check_writable(side="the cluster")
    except StorageError as exc:
        raise RaysamError(f"The run storage is not writable: {exc} Choose another --storage "
                          "or fix it.") from None
    return storage


def resolve_run(storage: Storage, name: str | None, content_hash: str) -> tuple[str, bool]:
    """(name, resumed). An explicit name whose folder exists resumes it only when it trained
    on the same data; no name gives a fresh unique one."""
    if not name:
        name = fresh_run_name()
    safe_name(name, "run name")
    if not storage.exists(storage.path(name)):
        return name, False
    data = storage.read_bytes(storage.path(name, RUN_FILE))
    if data is None:
        raise RaysamError(f"{storage.uri_of(name)} exists but is not a napari-raysam run; choose "
                          "another --name.")
    old = json.loads(data).get("dataset_content_hash")
    if old != content_hash:
        raise RaysamError(
            f"The run {name!r} in {redact(storage.uri)} was trained on a different training set "
            f"(content hash {str(old)[:12]}..., this one {content_hash[:12]}...). Choose a new "
            "--name (or leave it out) to start a fresh run."
        )
    return name, True


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


def build_trained_sam(config: TrainConfig, state: dict):
    """Base model + a checkpoint's trained weights, as a plain SAM (LoRA merged)."""
    from napari_raysam.core.sam.models import load_model
    from napari_raysam.core.training.trainable import merge_lora, setup_mode

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
    """Check everything, train on Ray, write model.pt/report.json/curves.png to the run.

    ``config.dataset`` and ``config.model`` may name objects in storage (copied to this node,
    :mod:`..node_cache`); ``config.storage`` is a folder or an object-store URI. ``on_event``
    receives every event (start, baseline, epoch, resume, end) as it lands in the run's events.
    Raises RaysamError for bad input before the trainer starts.
    """
    from napari_raysam.core.dataset.on_node import dataset_on_node

    config = TrainConfig.from_dict(config.to_dict()).validate()
    if not is_remote_uri(config.dataset):
        config.dataset = str(Path(dataset_on_node(config.dataset)).expanduser().resolve())
    ts = check_dataset(dataset_on_node(config.dataset))
    check_model_spec(config.model)
    if config.mode == "lora":
        from napari_raysam.core.training.trainable import require_peft

        require_peft()
    storage = open_run_storage(config.storage)
    config.storage = storage.uri
    name, resumed = resolve_run(storage, config.name, ts.content_hash)
    config.name = name
    run = storage.child(name)
    ensure_ray(log_to_driver)
    check_resources(config)
    if not resumed:
        run.write_bytes(run.path(RUN_FILE), json.dumps(
            {"name": name, "dataset_content_hash": ts.content_hash, "config": config.to_dict()},
            indent=1).encode())
    log = EventLog(run)
    follower = Follower(EventLog(run), on_event or (lambda e: None))
    follower.start()
    warning = None if ts.has_val else NO_VAL
    if warning and (config.patience or config.lr_schedule != "constant"):
        warning += " " + NO_VAL_OPTIONS
    log.append({"event": "start", "run": name, "run_dir": redact(run.uri),
                "dataset": redact(config.dataset), "content_hash": ts.content_hash,
                "model": redact(config.model), "mode": config.mode, "workers": config.workers,
                "epochs": config.epochs or "auto", "resumed": resumed, "validated": ts.has_val,
                **({"warning": warning} if warning else {})})
    try:
        result = _fit(config, run, ts.has_val)
        outcome = _finish(config, run, result, ts.content_hash)
    except BaseException as exc:
        log.append({"event": "end", "status": "error", "error": str(exc)})
        follower.stop()
        if isinstance(exc, RaysamError | KeyboardInterrupt):
            raise
        raise RaysamError(f"Training failed: {exc}. See the log above; the events so far are "
                          f"under {redact(run.uri)}.") from exc
    log.append({"event": "end", "status": "ok", "checkpoint": outcome.checkpoint,
                "report": outcome.report, "best_epoch": outcome.best_epoch,
                "run": name, **outcome.facts, **{k: outcome.after.get(k) for k in
                                                 ("val_miou_point", "val_miou_box")}})
    follower.stop()
    return outcome


def _fit(config: TrainConfig, run: Storage, validated: bool = True):
    """The TorchTrainer; ``fit`` runs in a thread so the caller keeps its signal handlers."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from napari_raysam.core.training.loop import train_loop_per_worker

    resources = {"CPU": config.cpus_per_worker}
    if config.gpus_per_worker:
        resources["GPU"] = config.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.to_dict(), "run": run.uri},
        scaling_config=ScalingConfig(num_workers=config.workers,
                                     use_gpu=config.gpus_per_worker > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=config.name, storage_path=config.storage,
            failure_config=FailureConfig(max_failures=config.max_failures),
            # without a val split there is no score: keep the latest checkpoint
            checkpoint_config=CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=
                                               BEST_METRIC, checkpoint_score_order="max")
            if validated else CheckpointConfig(num_to_keep=1),
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


def _finish(config: TrainConfig, run: Storage, result, content_hash: str) -> RunOutcome:
    import tempfile

    import torch

    from napari_raysam.core.sam.models import save_checkpoint
    from napari_raysam.core.training.loop import STATE_FILE
    from napari_raysam.core.training.report import report_facts, write_curves, write_report

    ranked = [(m[BEST_METRIC], c) for c, m in (result.best_checkpoints or [])
              if m.get(BEST_METRIC) is not None]
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
    with tempfile.TemporaryDirectory(prefix="raysam-out-") as out:
        out = Path(out)
        save_checkpoint(out / "model.pt", loaded.sam, loaded.model_type,
                        tiny_config=loaded.tiny_config, lineage=lineage,
                        normalisation=run_normalisation(config, loaded.normalisation))
        report = write_report(out, before, after, best_epoch, history,
                              {"run": config.name, "checkpoint": run.uri_of("model.pt"),
                               "base_model": redact(config.model), "mode": config.mode,
                               "dataset_content_hash": content_hash})
        facts = report_facts(json.loads(report.read_text()))
        write_curves(out, before, history, best_epoch)
        for fname in ("curves.png", "report.json", "model.pt"):  # model.pt last: marks done
            run.put_file(out / fname, run.path(fname))
    return RunOutcome(config.name, run.uri, run.uri_of("model.pt"), run.uri_of("report.json"),
                      best_epoch, history, before, after, facts)


def _lineage(config: TrainConfig, content_hash: str, history: list, baseline, **extra) -> dict:
    """What a fine-tuned checkpoint records about how it was made (our one lineage format)."""
    return {"base_model": redact(config.model), "mode": config.mode, "run": config.name,
            "dataset": redact(config.dataset), "dataset_content_hash": content_hash,
            "config": config.to_dict(), "metrics": history, "baseline": baseline,
            "versions": _versions(), **extra}


def save_partial_model(config: TrainConfig, state: dict, path: str | Path, content_hash: str,
                       checkpoint: str, run_state: str) -> Path:
    """model.pt from a Ray checkpoint of a run that never finished (failed or cancelled):
    the base model plus the checkpoint's weights; lineage says ``partial`` and which epoch."""
    from napari_raysam.core.sam.models import save_checkpoint

    loaded = build_trained_sam(config, state)
    epoch = int(state["epoch"])
    lineage = _lineage(config, content_hash, list(state.get("history", [])),
                       state.get("baseline"), best_epoch=None, partial=True, epoch=epoch,
                       checkpoint=checkpoint, run_state=run_state)
    return save_checkpoint(path, loaded.sam, loaded.model_type, tiny_config=loaded.tiny_config,
                           lineage=lineage,
                           normalisation=run_normalisation(config, loaded.normalisation))


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
