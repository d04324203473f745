"""Progress events of a run: one JSON object per event under ``<run>/events/`` in storage.

Object stores cannot append, so each event is its own small object, named so that names sort
in the order the events happened (``<time ns>-<kind>[-<epoch>].json``); readers list the folder
and read the names they have not seen. The same code serves local and shared folders. Runs
written by older versions kept one ``metrics.jsonl``; it is still read.

Kinds: ``start``, ``baseline``, ``progress`` (within an epoch: ``epoch``, ``epochs``, ``step``,
``steps``, ``eta_s``), ``epoch`` (its metrics, ``eta_s``), ``resume``, ``end``. ``eta_s`` is the
job's own estimate of the seconds left (:class:`Eta`), an upper bound when early stopping is on.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from napari_raysam.core.storage import Storage, StorageError

EVENTS_DIR = "events"
LEGACY_FILE = "metrics.jsonl"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class EventLog:
    """The events of one run: ``storage`` is the run's folder (a :class:`Storage` rooted there)."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._seen: set[str] = set()

    @classmethod
    def at(cls, run: str | Path) -> EventLog:
        """The event log of a run folder given as a local path or a storage URI."""
        return cls(Storage.open(str(run)))

    def append(self, event: dict) -> dict:
        """Write one event (adds ``time``). An ``epoch`` event already written is not written
        twice (a worker restarted after the report but before this write)."""
        event = {**event, "time": event.get("time") or now_iso()}
        tail = ""
        if event.get("event") == "epoch":
            tail = f"-{int(event.get('epoch', 0)):05d}"
            if any(n.endswith(f"-epoch{tail}.json") for n, _ in self.storage.list(EVENTS_DIR)):
                return event
        name = f"{time.time_ns():020d}-{event.get('event', 'event')}{tail}.json"
        self.storage.write_bytes(self.storage.path(EVENTS_DIR, name),
                                 json.dumps(event, default=str).encode())
        return event

    def read_new(self) -> list[dict]:
        """Events not returned before by this object, in order (unreadable ones skipped)."""
        out = []
        for name, is_dir in self.storage.list(EVENTS_DIR):
            if is_dir or not name.endswith(".json") or name in self._seen:
                continue
            try:
                data = self.storage.read_bytes(self.storage.path(EVENTS_DIR, name))
                event = json.loads(data or b"")
            except (OSError, ValueError):
                continue  # not complete yet (a folder's temporary name) or damaged
            self._seen.add(name)
            if isinstance(event, dict):
                out.append(event)
        return out

    def read_all(self) -> list[dict]:
        """Every event of the run in order (a legacy ``metrics.jsonl`` first)."""
        self._seen.clear()
        return self._legacy() + self.read_new()

    def _legacy(self) -> list[dict]:
        data = self.storage.read_bytes(self.storage.path(LEGACY_FILE)) or b""
        out = []
        for line in data.decode(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def read_events(run: str | Path) -> list[dict]:
    """All events of a run folder (local path or storage URI); [] when it has none."""
    try:
        return EventLog.at(run).read_all()
    except (StorageError, OSError):
        return []


def append_event(run: str | Path, event: dict) -> dict:
    """Append one event to the run at ``run`` (local path or storage URI)."""
    return EventLog.at(run).append(event)


class Eta:
    """Seconds left in a run, measured by the job: the mean time of the steps this process has
    trained (from the first steps on) times the steps to come, plus the last validation's time
    for each validation to come. ``due`` says when to stream a ``progress`` event: once after
    the first ``first`` steps, then every ``every_s`` seconds."""

    def __init__(self, steps: int, epochs: int, first: int = 3, every_s: float = 10.0):
        self.steps, self.epochs, self.first, self.every_s = steps, epochs, first, every_s
        self.train_s, self.done, self.val_s = 0.0, 0, 0.0
        self._last: float | None = None

    def stepped(self, seconds: float) -> None:
        self.train_s += seconds
        self.done += 1

    def validated(self, seconds: float) -> None:
        self.val_s = seconds

    def left_s(self, epoch: int, step: int, validated: bool = False) -> float | None:
        """After ``step`` steps of ``epoch`` (``validated``: its validation done too); None
        before the first step was timed."""
        if not self.done:
            return None
        steps_left = (self.steps - step) + (self.epochs - epoch) * self.steps
        vals_left = self.epochs - epoch + (0 if validated else 1)
        return steps_left * self.train_s / self.done + vals_left * self.val_s

    def due(self, now: float | None = None) -> bool:
        """True when a progress event should go out now (and marks it sent)."""
        now = time.monotonic() if now is None else now
        if self._last is None and self.done < min(self.first, self.steps):
            return False
        if self._last is not None and now - self._last < self.every_s:
            return False
        self._last = now
        return True


class Follower(threading.Thread):
    """Polls a run's events and hands each new one to ``callback`` (events already there
    when it starts are skipped)."""

    def __init__(self, log: EventLog, callback: Callable[[dict], None], interval: float = 0.5):
        super().__init__(daemon=True)
        self.log, self.callback, self.interval = log, callback, interval
        self._halt = threading.Event()
        self.log.read_new()

    def poll(self) -> None:
        try:
            events = self.log.read_new()
        except (StorageError, OSError):
            return  # a storage hiccup: try again next time
        for event in events:
            self.callback(event)

    def run(self) -> None:
        while not self._halt.is_set():
            self.poll()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        self.poll()
