"""Follow a run (local and remote alike, through the Jobs API): its events, status and log
lines; refresh, re-attach, cancel.

Events yielded by :func:`follow` (dicts, one per step):

* training events, as ``train --json`` prints them: ``start``, ``baseline``, ``progress``
  (with the job's ``eta_s``), ``epoch``, ``resume``, ``end`` (replayed first from the run's
  ``events/`` in storage, never twice);
* ``{"event": "status", "run", "status": PENDING|RUNNING|SUCCEEDED|FAILED|STOPPED,
  "message", "log_tail"}`` whenever the job status changes (log_tail on FAILED);
* ``{"event": "log", "run", "line"}`` for every other line of the job's output;
* ``{"event": "error", "run", "message"}`` when contact with the cluster is lost (follow ends).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict

from napari_raysam.core.cluster import (
    ClusterError,
    ClusterProfile,
    ProfileStore,
    make_client,
    resolve_address,
)
from napari_raysam.core.cluster.local_head import LocalHead
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.events import EventLog, now_iso
from napari_raysam.core.paths import safe_name
from napari_raysam.core.runs.logs import LogStream
from napari_raysam.core.runs.records import TERMINAL, RunIndex, RunRecord
from napari_raysam.core.storage import Storage, StorageError

#: Events a job prints as JSON lines (progress: training steps, or images of a batch job).
TRAINING_EVENTS = ("start", "baseline", "progress", "epoch", "resume", "end")


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


#: What a failed job is called in its status message, by run kind.
JOB_NAMES = {"train": "training", "apply": "batch segmentation", "embed": "embedding"}


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
        job = JOB_NAMES.get(record.kind, "training")
        event["message"] = changes["message"] = f"the {job} job failed; see the log tail"
    if status == "STOPPED":
        training = record.kind == "train"
        changes.update(cancelled=True, partial=training)
        event["message"] = changes["message"] = (
            "cancelled; the last checkpoint is kept (partial)" if training
            else "cancelled; what was finished is kept")
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




def record_json(record: RunRecord) -> dict:
    return asdict(record)
