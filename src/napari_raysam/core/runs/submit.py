"""Submit a fine-tuning run: check the storage from both sides, upload the training set and a
local base model, start ``python -m napari_raysam.train`` through the Jobs API, record the run."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from napari_raysam.core.cluster import (
    ClusterError,
    ClusterProfile,
    check_cluster_storage,
    make_client,
    package_dir,
    resolve_address,
)
from napari_raysam.core.cluster.local_head import RUN_SLOT, LocalHead
from napari_raysam.core.dataset.upload import upload_dataset
from napari_raysam.core.events import now_iso
from napari_raysam.core.model_store import (
    registered_model_path,
)
from napari_raysam.core.paths import safe_name
from napari_raysam.core.runs.records import RunIndex, RunRecord
from napari_raysam.core.storage import Storage

#: Options the run client sets itself; a caller cannot pass them.
RESERVED = ("dataset", "storage", "name", "json", "verbose", "help")


def train_argv(options: dict) -> list[str]:
    """Command-line options for ``napari_raysam.train`` from ``{name: value}``, checked against
    TrainConfig's schema (types, choices, values) before anything is uploaded."""
    from napari_raysam.core.training.config import option_argv

    return option_argv(options, reserved=RESERVED)


def build_entrypoint(python: str, dataset_uri: str, argv: list[str], runs_uri: str,
                     name: str) -> str:
    """The job's shell command; every part is quoted (user strings never reach the shell)."""
    safe_name(name, "run name")
    return shlex.join([python, "-m", "napari_raysam.train", dataset_uri, *argv, "--storage",
                       runs_uri, "--name", name, "--json"])


def upload_base_model(storage: Storage, spec: str) -> str:
    """The spec the job loads: a model that lives on this computer (``run:NAME``, a checkpoint
    file) is uploaded to ``models/<sha256>/`` and named by its storage URI; registry names and
    built-in models are left as they are (the cluster resolves them itself)."""
    from napari_raysam.core.sam.models import TINY_CELLS

    spec = str(spec).strip()
    if spec.startswith("run:"):
        return storage.upload_model(registered_model_path(spec[4:]))
    if spec == TINY_CELLS or spec == "tiny" or spec.startswith("tiny:") or "://" in spec:
        return spec
    path = Path(spec).expanduser()
    if path.is_file():
        return storage.upload_model(path.resolve())
    return spec


def submit(profile: ClusterProfile, dataset: str | Path, options: dict | None = None,
           index: RunIndex | None = None, head: LocalHead | None = None,
           preflight: bool = True, verbose: bool = False) -> RunRecord:
    """Check the storage from both sides (remote profiles: a probe job on the cluster, see
    :func:`.cluster.check_cluster_storage`), upload the training set and a local base model,
    submit the training job and record it; returns the record. ``verbose``: the job prints
    Ray's own log lines too."""
    from napari_raysam.core.training.config import fresh_run_name

    index = index or RunIndex()
    argv = train_argv(dict(options or {}))
    client, storage = open_cluster(profile, head, preflight)
    options = dict(options or {})
    if options.get("model"):
        argv = train_argv({**options, "model": upload_base_model(storage, options["model"])})
    content_hash, dataset_uri, _, _ = upload_dataset(storage, dataset)
    name = fresh_run_name()
    entry = build_entrypoint(job_python(profile), dataset_uri,
                             argv + (["--verbose"] if verbose else []), storage.uri_of("runs"),
                             name)
    record = RunRecord(
        name=name, profile=profile.name, address=profile.address, storage=storage.uri,
        dataset_hash=content_hash, dataset_uri=dataset_uri, config=options,
        submitted=now_iso(), token_env=profile.token_env)
    return start_job(client, profile, index, record, entry)


def open_cluster(profile: ClusterProfile, head: LocalHead | None = None,
                 preflight: bool = True) -> tuple[object, Storage]:
    """The Jobs-API client and the profile's storage, both checked (remote profiles: a probe
    job on the cluster, see :func:`.cluster.check_cluster_storage`) before anything is sent."""
    profile.validate()
    address = resolve_address(profile, head, start_local=profile.is_local)
    client = make_client(address, profile.headers())
    storage = Storage.open(profile.storage_uri())
    storage.check_writable()
    if preflight and not profile.is_local:
        check_cluster_storage(client, profile.storage_uri())
    return client, storage


def job_python(profile: ClusterProfile) -> str:
    """The job's Python: this one on the embedded head, the image's ``python`` elsewhere."""
    return sys.executable if profile.is_local else "python"


def start_job(client, profile: ClusterProfile, index: RunIndex, record: RunRecord,
              entry: str) -> RunRecord:
    """Record the run, then submit ``entry`` as the job ``record.name``; a refused submission
    is recorded as FAILED and reported."""
    name = record.name
    index.put(record)
    try:
        client.submit_job(entrypoint=entry, submission_id=name,
                          runtime_env={"py_modules": [package_dir()],
                                       "env_vars": {"PYTHONUNBUFFERED": "1"}},
                          entrypoint_resources={RUN_SLOT: 1} if profile.is_local else None,
                          metadata={"napari_raysam_run": name, "kind": record.kind,
                                    "dataset_hash": record.dataset_hash})
    except Exception as exc:  # noqa: BLE001 - recorded, then reported
        index.update(name, state="FAILED", message=f"submission failed: {type(exc).__name__}")
        raise ClusterError(f"The cluster did not accept the run ({type(exc).__name__}: "
                           f"{str(exc)[:300]}). Check the cluster summary and retry.") from None
    return index.get(name)
