"""Fetching the last checkpoint of a run that ended without its final model.pt.

A FAILED or STOPPED run keeps its Ray checkpoints (``checkpoint_epoch_*``) in storage; the newest
complete one is rebuilt here into our checkpoint format and registered as a partial model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.events import now_iso
from napari_raysam.core.model_store import (
    RegisteredModel,
    model_dest,
    model_store_dir,
    register_model,
)
from napari_raysam.core.paths import safe_name
from napari_raysam.core.runs.records import TERMINAL, RunRecord, ended_text
from napari_raysam.core.storage import Storage, file_sha256

__all__ = ["fetch_partial"]


def _checkpoints(storage: Storage, name: str) -> list[tuple[str, str]]:
    """``(folder name, path)`` of the run's ``checkpoint_epoch_*`` folders, newest first."""
    from pyarrow.fs import FileSelector, FileType

    infos = storage.fs.get_file_info(FileSelector(storage.path("runs", name),
                                                  allow_not_found=True))
    found = [(i.base_name, i.path) for i in infos if i.type == FileType.Directory
             and i.base_name.startswith("checkpoint_epoch_")]
    return sorted(found, reverse=True)


def _read_state(storage: Storage, path: str, local: Path) -> dict | None:
    """The checkpoint's state.pt (weights_only), or None when the folder is incomplete or its
    file unreadable. A failed download raises (StorageError): no silent older fallback."""
    import torch

    from napari_raysam.core.training.loop import STATE_FILE

    remote = f"{path}/{STATE_FILE}"
    if storage.size(remote) is None:
        return None
    storage.download(remote, local)
    try:
        state = torch.load(local, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - truncated/corrupt/unsafe: not a complete checkpoint
        return None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) \
            or "epoch" not in state:
        return None
    return state


def _run_config(storage: Storage, record: RunRecord, state: dict):
    """The run's TrainConfig from ``run.json`` in storage (else rebuilt from the record)."""
    from napari_raysam.core.training.config import TrainConfig
    from napari_raysam.core.training.runner import RUN_FILE

    try:
        data = json.loads(storage.read_bytes(storage.path("runs", record.name, RUN_FILE)) or "")
        return TrainConfig.from_dict(data["config"])
    except (ValueError, KeyError, TypeError, OSError, RaysamError):
        return TrainConfig(dataset=record.dataset_uri, name=record.name,
                           model=str(state.get("model_spec") or record.config.get("model", "tiny")),
                           mode=str(state.get("mode") or record.config.get("mode", "decoder")),
                           lora_rank=int(record.config.get("lora_rank", 4)))


def fetch_partial(record: RunRecord, store: Path | None = None,
                  storage: Storage | None = None) -> RegisteredModel:
    """Register the newest complete checkpoint of a FAILED/STOPPED run as a partial model.

    It is rebuilt locally (base model + the checkpoint's weights, core.models' checkpoint format,
    lineage ``partial``/``epoch``), loaded back with ``weights_only=True`` and registered as
    ``<run>.partial-epoch<N>`` (model spec ``run:<run>.partial-epoch<N>``).
    """
    import tempfile

    from napari_raysam.core.model_store import partial_model_name
    from napari_raysam.core.sam.models import ModelError, load_checkpoint
    from napari_raysam.core.training.runner import save_partial_model

    name = safe_name(record.name, "run name")
    if record.state not in TERMINAL:
        raise RaysamError(
            f"The run {name} is {record.state} (as last seen); a partial fetch takes the last "
            f"checkpoint of a run that has ended. Cancel it (`napari-raysam runs cancel {name}`) "
            f"or follow it until it ends (`napari-raysam runs follow {name}`), then fetch again.")
    storage = storage or Storage.open(record.storage)
    store = Path(store or model_store_dir()).resolve()
    folders = _checkpoints(storage, name)
    if not folders:
        raise RaysamError(
            f"The run {name} {ended_text(record)} before its first checkpoint: "
            f"{storage.uri_of('runs', name)} holds no checkpoint_epoch_* folder, so there is no "
            "partial model to fetch. Train again (a run checkpoints after every epoch).")
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store, prefix=f".{name}.partial-") as tmp:
        for folder, path in folders:
            state = _read_state(storage, path, Path(tmp) / f"{folder}.pt")
            if state is not None:
                break
        else:
            raise RaysamError(
                f"None of the {len(folders)} checkpoint(s) of the run {name} under "
                f"{storage.uri_of('runs', name)} is complete (each lacks a readable state.pt); "
                "there is no partial model to fetch. Train again.")
        epoch = int(state["epoch"])
        model_name = partial_model_name(name, epoch)
        _, dest = model_dest(store, model_name)
        config = _run_config(storage, record, state)
        try:
            path = save_partial_model(config, state, Path(tmp) / "model.pt", record.dataset_hash,
                                      folder, record.state)
            load_checkpoint(path, device="cpu")  # verified: weights_only, rebuilds the SAM
        except (ModelError, RuntimeError, KeyError) as exc:
            raise RaysamError(f"The checkpoint {folder} of the run {name} could not be made into a "
                              f"model here ({exc}); check that its base model {config.model!r} "
                              "loads on this computer.") from None
        sha256 = file_sha256(path)
        dest.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest / "model.pt")
    history = {h.get("epoch"): h for h in state.get("history", []) if isinstance(h, dict)}
    model = RegisteredModel(
        name=model_name, path=str(dest / "model.pt"), base_model=config.model,
        metrics={"before": state.get("baseline"), "after": history.get(epoch)},
        sha256=sha256, run=name, registered=now_iso(), partial=True, epoch=epoch)
    return register_model(model, store)
