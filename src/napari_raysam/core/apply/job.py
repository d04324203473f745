"""The batch-segmentation job's driver: list the inputs, skip what is done, segment the rest in
a Ray Data actor pool, stream progress events, write the results table.

Progress events go to the run's ``events/`` in storage and to stdout (``--json``), like a
training run's: ``start`` (totals), ``progress`` (images done / total, rate, ETA) and ``end``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from napari_raysam.core.apply.inputs import is_candidate
from napari_raysam.core.apply.pool import Progress, event_sink, run_pool
from napari_raysam.core.apply.segmenter import (
    ApplySettings,
    Segmenter,
    output_dir,
    settings_key,
    table_row,
)
from napari_raysam.core.apply.table import RESULTS_FILE, render_tables
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.storage import Storage, StorageError, file_sha256, is_remote_uri, redact


@dataclass
class ApplyConfig:
    """One batch-segmentation run: inputs and outputs are paths under ``storage``."""

    storage: str  # the profile's storage URI (root)
    inputs: str  # folder of input images, relative to ``storage``
    model: str  # a model spec the cluster can load
    name: str  # the run name: events and the table go to runs/<name>/
    workers: int = 1
    settings: ApplySettings = field(default_factory=ApplySettings)


def model_key(spec: str, settings: ApplySettings) -> str:
    """Names the model and settings in output paths: the checkpoint's sha256 when the spec is
    a file (uploaded models carry it in their path), else the spec (registry weights are fixed
    by their own hash); plus the segmentation settings."""
    import hashlib

    from napari_raysam.core.node_cache import model_on_node
    from napari_raysam.core.sam.models import TINY_CELLS, shipped_weights

    if spec == TINY_CELLS:
        ident = file_sha256(shipped_weights())
    elif is_remote_uri(spec) or "/" in spec or spec.endswith(".pt"):
        ident = file_sha256(model_on_node(spec))
    else:
        ident = spec
    text = json.dumps({"model": ident, **settings_key(settings)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def list_inputs(storage: Storage, folder: str) -> tuple[list[dict], list[dict]]:
    """(items to segment, rows of files skipped by name), in name order."""
    try:
        entries = storage.list(folder)
    except (OSError, StorageError) as exc:
        raise RaysamError(f"Cannot list the input folder {redact(storage.uri_of(folder))}: "
                          f"{exc}") from None
    items, skipped = [], []
    for name, is_dir in sorted(entries):
        if is_dir or name.endswith(".sha256") or name.startswith("."):
            continue
        path = storage.path(folder, name)
        if not is_candidate(name):
            skipped.append(table_row(name, "", None, "skipped", "not a TIFF file (.tif/.tiff)"))
            continue
        sha = storage.recorded_sha256(path) or storage.sha256(path)
        items.append({"name": name, "path": path, "sha256": sha})
    if not items and not skipped:
        raise RaysamError(f"The input folder {redact(storage.uri_of(folder))} holds no files.")
    return items, skipped


def done_rows(storage: Storage, key: str) -> dict[str, dict]:
    """Rows already written for model key ``key``, by input sha256."""
    out = {}
    for name, is_dir in storage.list(*output_dir(key)):
        if is_dir or not name.endswith(".json"):
            continue
        try:
            row = json.loads(storage.read_bytes(storage.path(*output_dir(key), name)) or b"")
        except ValueError:
            continue  # damaged: the image is done again
        out[name[:-5]] = row
    return out


def run_apply(config: ApplyConfig, on_event: Callable[[dict], None] | None = None) -> dict:
    """Segment every input not done yet for this model; returns the summary (``end`` event)."""
    storage = Storage.open(config.storage, side="the cluster")
    emit = event_sink(storage, config.name, on_event)
    items, skipped = list_inputs(storage, config.inputs)
    key = model_key(config.model, config.settings)
    done = done_rows(storage, key)
    todo = [i for i in items if i["sha256"] not in done]
    rows = [{**done[i["sha256"]], "image": i["name"], "reused": True}
            for i in items if i["sha256"] in done]
    total = len(items)
    emit({"event": "start", "kind": "apply", "total": total, "todo": len(todo),
          "reused": len(rows), "skipped_files": len(skipped), "workers": config.workers,
          "model": config.model, "model_key": key})
    progress = Progress(emit, total, len(rows), counted="segmented")
    if todo:
        run_pool(todo, Segmenter, (config.model, config.storage, key, config.settings),
                 config.workers, config.settings.threads, progress, rows.append)
    rows += skipped
    rows.sort(key=lambda r: r["image"])
    _write_results(storage.child("runs", config.name), rows)
    summary = {"event": "end", "status": "ok", "total": total, "segmented": len(todo),
               "reused": total - len(todo),
               "skipped": sum(r["status"] == "skipped" for r in rows),
               "seconds": progress.elapsed(), "model_key": key}
    emit(summary)
    return summary


def _write_results(run: Storage, rows: list[dict]) -> None:
    for fname, text in render_tables(rows).items():
        run.write_bytes(run.path(fname), text.encode())
    run.write_bytes(run.path(RESULTS_FILE), json.dumps(rows).encode())


__all__ = ["ApplyConfig", "ApplySettings", "model_key", "run_apply"]
