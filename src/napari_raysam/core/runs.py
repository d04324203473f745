"""A fine-tuning run on a cluster: submit, follow, cancel, re-attach, fetch.

Every run goes through the Jobs API (local and remote alike); the entrypoint is
``python -m napari_raysam.train`` shipped with ``runtime_env.py_modules``. Runs are recorded in
the local run index (:mod:`.run_index`) so a new session can list and re-attach to them.

Events yielded by :func:`follow` (dicts, one per step):

* training events, as ``train --json`` prints them: ``start``, ``baseline``, ``epoch``,
  ``resume``, ``end`` (replayed first from the run's ``events/`` in storage, never twice);
* ``{"event": "status", "run", "status": PENDING|RUNNING|SUCCEEDED|FAILED|STOPPED,
  "message", "log_tail"}`` whenever the job status changes (log_tail on FAILED);
* ``{"event": "log", "run", "line"}`` for every other line of the job's output;
* ``{"event": "error", "run", "message"}`` when contact with the cluster is lost (follow ends).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from .cluster import (
    ClusterError,
    ClusterProfile,
    ProfileStore,
    check_cluster_storage,
    make_client,
    package_dir,
    resolve_address,
)
from .errors import RaysamError
from .job_logs import LogStream
from .local_head import RUN_SLOT, LocalHead
from .paths import safe_name
from .run_index import (
    TERMINAL,
    RegisteredModel,
    RunIndex,
    RunRecord,
    ended_text,
    list_registered_models,
    model_dest,
    register_model,
    registered_model_path,
)
from .storage import Storage, StorageError
from .training.events import EventLog, now_iso

__all__ = ["RunRecord", "cancel", "fetch", "follow", "history", "list_registered_models",
           "list_runs", "refresh", "submit", "train_argv"]

FETCH_FILES = ("model.pt", "report.json", "curves.png")
TRAINING_EVENTS = ("start", "baseline", "epoch", "resume", "end")
#: Options the run client sets itself; a caller cannot pass them.
RESERVED = ("dataset", "storage", "name", "json", "verbose", "help")


def train_argv(options: dict) -> list[str]:
    """Command-line options for ``napari_raysam.train`` from ``{name: value}``, checked against
    TrainConfig's schema (types, choices, values) before anything is uploaded."""
    from .training.config import option_argv

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
    from .models import TINY_CELLS

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
    from .training.config import fresh_run_name

    index = index or RunIndex()
    profile.validate()
    options = dict(options or {})
    argv = train_argv(options)
    address = resolve_address(profile, head, start_local=profile.is_local)
    client = make_client(address, profile.headers())
    storage = Storage.open(profile.storage_uri())
    storage.check_writable()
    if preflight and not profile.is_local:
        check_cluster_storage(client, profile.storage_uri())
    if options.get("model"):
        argv = train_argv({**options, "model": upload_base_model(storage, options["model"])})
    content_hash, dataset_uri, _, _ = storage.upload_dataset(dataset)
    name = fresh_run_name()
    python = sys.executable if profile.is_local else "python"
    entry = build_entrypoint(python, dataset_uri, argv + (["--verbose"] if verbose else []),
                             storage.uri_of("runs"), name)
    record = index.put(RunRecord(
        name=name, profile=profile.name, address=profile.address, storage=storage.uri,
        dataset_hash=content_hash, dataset_uri=dataset_uri, config=dict(options or {}),
        submitted=now_iso(), token_env=profile.token_env))
    try:
        client.submit_job(entrypoint=entry, submission_id=name,
                          runtime_env={"py_modules": [package_dir()],
                                       "env_vars": {"PYTHONUNBUFFERED": "1"}},
                          entrypoint_resources={RUN_SLOT: 1} if profile.is_local else None,
                          metadata={"napari_raysam_run": name, "dataset_hash": content_hash})
    except Exception as exc:  # noqa: BLE001 - recorded, then reported
        index.update(name, state="FAILED", message=f"submission failed: {type(exc).__name__}")
        raise ClusterError(f"The cluster did not accept the run ({type(exc).__name__}: "
                           f"{str(exc)[:300]}). Check the cluster summary and retry.") from None
    return record


def list_runs(index: RunIndex | None = None) -> list[RunRecord]:
    return (index or RunIndex()).list()


def _profile_of(record: RunRecord) -> ClusterProfile:
    try:
        return ProfileStore().get(record.profile)
    except RaysamError:
        return ClusterProfile(name=record.profile, address=record.address,
                              token_env=record.token_env, storage=record.storage)


def _client(record: RunRecord, head: LocalHead | None = None):
    profile = _profile_of(record)
    return make_client(resolve_address(profile, head), profile.headers())


def history(record: RunRecord) -> list[dict]:
    """The run's events from its ``events/`` in storage ([] when not reachable yet)."""
    safe_name(record.name, "run name")
    try:
        return EventLog(Storage.open(record.storage).child("runs", record.name)).read_all()
    except (StorageError, OSError):
        return []


def _log_tail(client, name: str, lines: int = 40) -> str:
    try:
        return "\n".join(client.get_job_logs(name).splitlines()[-lines:])
    except Exception:  # noqa: BLE001 - best effort for the UI
        return ""


def _record_status(index: RunIndex, record: RunRecord, status: str, client) -> dict:
    changes: dict = {"state": status}
    event = {"event": "status", "run": record.name, "status": status, "message": ""}
    if status == "FAILED":
        changes["log_tail"] = event["log_tail"] = _log_tail(client, record.name)
        event["message"] = changes["message"] = "the training job failed; see the log tail"
    if status == "STOPPED":
        changes.update(cancelled=True, partial=True)
        event["message"] = changes["message"] = "cancelled; the last checkpoint is kept (partial)"
    if status in TERMINAL:
        changes["ended"] = now_iso()
    try:
        index.update(record.name, **changes)
    except RaysamError:
        pass  # followed without an index entry
    return event


def refresh(record: RunRecord, index: RunIndex | None = None) -> RunRecord:
    """Ask the cluster for the run's status and store it in the index."""
    index = index or RunIndex()
    client = _client(record)
    status = str(client.get_job_status(record.name).value)
    if status != record.state:
        _record_status(index, record, status, client)
    return index.get(record.name)


def _key(event: dict) -> str:
    return json.dumps({k: v for k, v in event.items() if k != "time"}, sort_keys=True,
                      default=str)


def follow(record: RunRecord, index: RunIndex | None = None, replay: bool = True,
           poll: float = 0.5, head: LocalHead | None = None, stream: bool = True
           ) -> Iterator[dict]:
    """Events of the run until it ends (see the module doc). Metrics already in storage are
    replayed first; then the job's log is streamed (``stream=False``: polled) and its status
    polled every ``poll`` seconds."""
    index = index or RunIndex()
    seen: set[str] = set()
    if replay:
        for event in history(record):
            seen.add(_key(event))
            yield event
    try:
        client = _client(record, head)
    except RaysamError as exc:
        yield {"event": "error", "run": record.name, "message": str(exc)}
        return
    status, buffer = None, ""
    logs = LogStream(client, record.name, stream=stream)
    try:
        while True:
            try:
                new_status = str(client.get_job_status(record.name).value)
                buffer += logs.read(final=new_status in TERMINAL)
            except Exception as exc:  # noqa: BLE001 - lost contact: report and end
                msg = (f"Lost contact with the cluster while following {record.name} "
                       f"({type(exc).__name__}). The run may still be going; restart the "
                       "cluster or re-attach later.")
                yield {"event": "error", "run": record.name, "message": msg}
                return
            *lines, buffer = buffer.split("\n")
            if new_status in TERMINAL and buffer:
                lines, buffer = [*lines, buffer], ""
            for line in lines:
                event = _parse(line, record.name)
                if event is None or (event["event"] in TRAINING_EVENTS and _key(event) in seen):
                    continue
                seen.add(_key(event))
                yield event
            if new_status != status:
                status = new_status
                yield _record_status(index, record, status, client)
            if status in TERMINAL:
                return
            time.sleep(poll)
    finally:
        logs.close()


def _parse(line: str, run: str) -> dict | None:
    line = line.rstrip("\r")
    if not line.strip():
        return None
    if line.startswith("{"):
        try:
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") in TRAINING_EVENTS:
                return event
        except ValueError:
            pass
    return {"event": "log", "run": run, "line": line}


def cancel(record: RunRecord, index: RunIndex | None = None, timeout: float = 15.0,
           head: LocalHead | None = None) -> RunRecord:
    """``stop_job``; waits until the job is STOPPED (or otherwise ended) and records it."""
    index = index or RunIndex()
    client = _client(record, head)
    client.stop_job(record.name)
    deadline = time.monotonic() + timeout
    status = str(client.get_job_status(record.name).value)
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.25)
        status = str(client.get_job_status(record.name).value)
    if status not in TERMINAL:
        raise ClusterError(f"The run {record.name} did not stop within {timeout:.0f} s; it is "
                           f"{status}. Try cancelling again.")
    _record_status(index, record, status, client)
    return index.get(record.name)


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
    :func:`.runs_partial.fetch_partial`). With ``partial`` a run that has its final model.pt
    fetches that one.
    """
    name = safe_name(record.name, "run name")
    store, dest = model_dest(store, name)
    storage = Storage.open(record.storage)
    run_path = storage.path("runs", name)
    if storage.size(storage.path("runs", name, "model.pt")) is None:
        if partial:
            from .runs_partial import fetch_partial

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
        metrics={"before": report.get("before"), "after": report.get("after")},
        sha256=got["model.pt"], run=name, registered=now_iso(),
        report=str(dest / "report.json") if "report.json" in got else None,
        curves=str(dest / "curves.png") if "curves.png" in got else None)
    register_model(model, store)
    try:
        (index or RunIndex()).update(name, model_dir=str(dest))
    except RaysamError:
        pass
    return model


def record_json(record: RunRecord) -> dict:
    return asdict(record)
