"""Batch segmentation runs, client side: upload a folder of images (by content hash), submit
``python -m napari_raysam.apply`` like a training run (same index, follow, cancel), fetch the
label TIFFs and the table (sha256-checked).

Inputs go to ``inputs/<folder hash>/`` under the profile's storage URI; an input already in
storage is given as a path relative to that URI (``inputs/…``) or a URI under it.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

from napari_raysam.core.apply.table import RESULTS_FILE
from napari_raysam.core.cluster import ClusterProfile
from napari_raysam.core.cluster.local_head import LocalHead
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.events import now_iso
from napari_raysam.core.paths import safe_name
from napari_raysam.core.runs.records import TERMINAL, RunIndex, RunRecord
from napari_raysam.core.runs.submit import job_python, open_cluster, start_job, upload_base_model
from napari_raysam.core.storage import Storage, file_sha256, redact

APPLY = "apply"


def fresh_apply_name() -> str:
    from napari_raysam.core.training.config import fresh_run_name

    return "apply-" + fresh_run_name().removeprefix("run-")


def upload_inputs(storage: Storage, folder: str | Path) -> tuple[str, str]:
    """Upload every file of a local folder to ``inputs/<folder hash>/`` (files already there
    are skipped). Returns (folder hash, path relative to the storage URI)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise RaysamError(f"The input {folder} is not a folder. Give a folder of TIFF images "
                          "(or a storage path under the profile's storage URI).")
    files = {p.name: file_sha256(p) for p in sorted(folder.iterdir())
             if p.is_file() and not p.name.startswith(".")}
    if not files:
        raise RaysamError(f"The folder {folder} holds no files to segment.")
    digest = hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()[:32]
    storage.upload_files(folder, files, ("inputs", digest))
    return digest, f"inputs/{digest}"


def _inputs_in_storage(storage: Storage, spec: str) -> str:
    """A storage input as a path relative to the storage root; refused when outside it."""
    rel = spec
    if "://" in spec or spec.startswith("/"):
        rel = _relative(storage, spec)
        if rel == spec:
            raise RaysamError(f"The input {redact(spec)} is not under the profile's storage "
                              f"{redact(storage.uri)}; copy it there or give a local folder.")
    if not storage.list(rel):
        raise RaysamError(f"No files at {redact(storage.uri_of(rel))}.")
    return rel.strip("/")


def _relative(storage: Storage, uri: str) -> str:
    base = storage.uri_of().split("?")[0].rstrip("/") + "/"
    return uri.split("?")[0][len(base):] if uri.startswith(base) else uri


def apply_entry(profile: ClusterProfile, storage: Storage, inputs: str, spec: str, name: str,
                workers: int, threads: int, *options: str) -> str:
    """The job's command line: ``python -m napari_raysam.apply`` on ``inputs`` (a folder
    relative to ``storage``) with ``options`` (``--embeddings …`` for an embedding run)."""
    return shlex.join([job_python(profile), "-m", "napari_raysam.apply", storage.uri_of(),
                       inputs, "--model", spec, "--name", name, *options, "--workers",
                       str(workers), "--threads", str(threads), "--json"])


def submit_apply(profile: ClusterProfile, inputs: str | Path, model: str, workers: int = 1,
                 threads: int = 1, index: RunIndex | None = None, head: LocalHead | None = None,
                 preflight: bool = True) -> RunRecord:
    """Check the cluster and storage, upload the images (a local folder) and a local model,
    submit the batch-segmentation job and record it (``kind="apply"``)."""
    if workers < 1 or threads < 1:
        raise RaysamError("workers and threads must be at least 1.")
    index = index or RunIndex()
    client, storage = open_cluster(profile, head, preflight)
    if Path(str(inputs)).expanduser().is_dir():
        digest, rel = upload_inputs(storage, inputs)
    else:
        rel = _inputs_in_storage(storage, str(inputs))
        digest = hashlib.sha256(rel.encode()).hexdigest()[:32]
    spec = upload_base_model(storage, model)
    name = fresh_apply_name()
    entry = apply_entry(profile, storage, rel, spec, name, workers, threads)
    record = RunRecord(
        name=name, profile=profile.name, address=profile.address, storage=storage.uri,
        dataset_hash=digest, dataset_uri=storage.uri_of(rel),
        config={"model": model, "workers": workers, "threads": threads},
        submitted=now_iso(), token_env=profile.token_env, kind=APPLY)
    return start_job(client, profile, index, record, entry)


def fetch_applied(record: RunRecord, dest: str | Path) -> Path:
    """Download the run's label TIFFs (``<image stem>_labels.tif``, sha256-checked) and its
    table (``table.csv``, ``objects.csv``; the labels column names the local files) into
    ``dest``. Works for a cancelled run too: what was finished comes back."""
    if record.kind != APPLY:
        raise RaysamError(f"{record.name} is a training run; use `napari-raysam runs fetch`.")
    name = safe_name(record.name, "run name")
    storage = Storage.open(record.storage)
    run = storage.child("runs", name)
    data = run.read_bytes(run.path(RESULTS_FILE))
    if data is None:
        if record.state not in TERMINAL:
            raise RaysamError(f"The run {name} is {record.state}; fetch it when it has ended.")
        rows = _rows_so_far(storage, run, _relative(storage, record.dataset_uri))
    else:
        rows = json.loads(data)
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    for row in rows:
        if row.get("status") != "ok" or not row.get("labels"):
            continue
        local = dest / f"{Path(row['image']).stem}_labels.tif"
        storage.download(storage.path(row["labels"]), local)
        row["labels"] = local.name
    _write_tables(dest, rows)
    return dest


def _rows_so_far(storage: Storage, run: Storage, inputs: str) -> list[dict]:
    """Rows of the images a cancelled or failed run finished (its inputs, its model key)."""
    from napari_raysam.core.apply.job import done_rows, list_inputs
    from napari_raysam.core.events import EventLog

    start = next((e for e in EventLog(run).read_all() if e.get("event") == "start"), None)
    if start is None:
        return []
    done = done_rows(storage, start["model_key"])
    items, _ = list_inputs(storage, inputs)
    return [{**done[i["sha256"]], "image": i["name"]} for i in items if i["sha256"] in done]


def _write_tables(dest: Path, rows: list[dict]) -> None:
    from napari_raysam.core.apply.table import render_tables

    for fname, text in render_tables(rows).items():
        (dest / fname).write_text(text)


def result_pairs(dest: str | Path, inputs: str | Path | None = None) -> list[tuple[str, Path | None,
                                                                                  Path]]:
    """(image name, its input file when ``inputs`` is a local folder holding it, its labels) for
    every segmented image of fetched results in ``dest``, in table order."""
    import csv

    dest = Path(dest)
    with open(dest / "table.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok" and r["labels"]]
    folder = Path(inputs) if inputs and Path(inputs).is_dir() else None
    out = []
    for r in rows:
        image = folder / r["image"] if folder and (folder / r["image"]).is_file() else None
        out.append((r["image"], image, dest / r["labels"]))
    return out
