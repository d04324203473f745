"""Fetch a run's outputs from its storage into the local model store and register the model
(a failed or cancelled run's last checkpoint: ``core.runs.partial``)."""

from __future__ import annotations

import json
from pathlib import Path

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.events import now_iso
from napari_raysam.core.model_store import (
    RegisteredModel,
    model_dest,
    register_model,
)
from napari_raysam.core.paths import safe_name
from napari_raysam.core.runs.records import TERMINAL, RunIndex, RunRecord, ended_text
from napari_raysam.core.storage import Storage
from napari_raysam.core.training.report import report_facts

FETCH_FILES = ("model.pt", "report.json", "curves.png")


def download_outputs(storage: Storage, run_path: str, dest: Path) -> dict[str, str]:
    """Download a finished run's model.pt (required), report.json and curves.png (when there)
    into ``dest``, sha256-checked and atomic; returns ``{file name: sha256}``."""
    got: dict[str, str] = {}
    for fname in FETCH_FILES:
        if storage.size(f"{run_path}/{fname}") is None and fname != "model.pt":
            continue
        got[fname] = storage.download(f"{run_path}/{fname}", dest / fname)
    return got


def fetch(record: RunRecord, store: Path | None = None, index: RunIndex | None = None,
          partial: bool = False) -> RegisteredModel:
    """Download model.pt, report.json and curves.png into ``<store>/<run>/`` (sha256-checked,
    atomic) and register the model under the run's name.

    A run that ended without model.pt (FAILED, STOPPED) is refused unless ``partial``: then its
    newest complete Ray checkpoint becomes ``<run>.partial-epoch<N>`` (see
    :func:`.partial.fetch_partial`). With ``partial`` a run that has its final model.pt
    fetches that one.
    """
    if record.kind != "train":
        raise RaysamError(f"{record.name} is not a training run (it is {record.kind!r}): it has "
                          "no model to fetch. Batch-segmentation runs are fetched with --out "
                          "DIR; for an embedding run press Compute on cluster again in the "
                          "Segment dock (finished planes are reused from storage).")
    name = safe_name(record.name, "run name")
    store, dest = model_dest(store, name)
    storage = Storage.open(record.storage)
    run_path = storage.path("runs", name)
    if storage.size(storage.path("runs", name, "model.pt")) is None:
        if partial:
            from napari_raysam.core.runs.partial import fetch_partial

            return fetch_partial(record, store, storage)
        if record.state not in TERMINAL:
            raise RaysamError(
                f"The run {name} is {record.state} and has no final model.pt yet. Fetch it after "
                f"it has finished (`napari-raysam runs follow {name}`), or cancel it "
                f"(`napari-raysam runs cancel {name}`) and fetch its last checkpoint with "
                f"`napari-raysam runs fetch {name} --partial`.")
        raise RaysamError(
            f"The run {name} {ended_text(record)} and has no final model.pt yet. Its last Ray "
            f"checkpoint under {storage.uri_of('runs', name)} can be fetched as a partial model: "
            f"`napari-raysam runs fetch {name} --partial` (runs.fetch(record, partial=True)).")
    got = download_outputs(storage, run_path, dest)
    report = json.loads((dest / "report.json").read_text()) if "report.json" in got else {}
    model = RegisteredModel(
        name=name, path=str(dest / "model.pt"), base_model=str(record.config.get("model", "tiny")),
        metrics={"before": report.get("before"), "after": report.get("after"),
                 **report_facts(report)},
        sha256=got["model.pt"], run=name, registered=now_iso(),
        report=str(dest / "report.json") if "report.json" in got else None,
        curves=str(dest / "curves.png") if "curves.png" in got else None)
    register_model(model, store)
    try:
        (index or RunIndex()).update(name, model_dir=str(dest))
    except RaysamError:
        pass
    return model
