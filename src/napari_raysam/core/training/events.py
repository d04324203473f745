"""Progress events: one JSON object per line, in ``<run>/metrics.jsonl`` and on stdout."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_events(run_dir: str | Path) -> list[dict]:
    """All complete events of a run (a torn last line is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def append_event(run_dir: str | Path, event: dict) -> dict:
    """Append one event line (adds ``time``). An ``epoch`` event already in the file is not
    written twice (a worker restarted after the report but before this line)."""
    event = {**event, "time": event.get("time") or now_iso()}
    if event.get("event") == "epoch":
        seen = {e.get("epoch") for e in read_events(run_dir) if e.get("event") == "epoch"}
        if event.get("epoch") in seen:
            return event
    path = Path(run_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(event, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return event


class Follower(threading.Thread):
    """Follows metrics.jsonl from a byte offset and hands each new event to ``callback``."""

    def __init__(self, run_dir: str | Path, callback: Callable[[dict], None], offset: int = 0,
                 interval: float = 0.3):
        super().__init__(daemon=True)
        self.path = Path(run_dir) / METRICS_FILE
        self.callback, self.offset, self.interval = callback, offset, interval
        self._halt = threading.Event()

    def poll(self) -> None:
        if not self.path.is_file():
            return
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            while True:
                line = fh.readline()
                if not line.endswith(b"\n"):
                    break  # incomplete: read it next time
                self.offset += len(line)
                try:
                    self.callback(json.loads(line))
                except ValueError:
                    continue

    def run(self) -> None:
        while not self._halt.is_set():
            self.poll()
            time.sleep(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        self.poll()
