"""The local run index: ``runs.json`` in the config dir, one record per submitted run.

A JSON file rewritten atomically under an advisory file lock, so the dock and the CLI
can update it at the same time. It never holds an auth token: a run keeps the *name* of
the environment variable holding it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.paths import config_dir, file_lock, read_json, safe_name, write_json_atomic

RUNS_FILE = "runs.json"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass
class RunRecord:
    """One submitted run. ``name`` is the run name and the Ray submission id."""

    name: str
    profile: str
    address: str
    storage: str
    dataset_hash: str
    dataset_uri: str
    config: dict
    submitted: str
    token_env: str | None = None
    state: str = "PENDING"
    cancelled: bool = False
    partial: bool = False
    message: str = ""
    log_tail: str = ""
    model_dir: str | None = None
    ended: str | None = None
    kind: str = "train"  # "train" (python -m napari_raysam.train), "apply" or "embed" (.apply)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    @classmethod
    def from_json(cls, data: dict) -> RunRecord:
        names = {f.name for f in fields(cls)}
        record = cls(**{k: v for k, v in data.items() if k in names})
        safe_name(record.name, "run name")
        return record


@dataclass
class RunIndex:
    """Known runs, newest last."""

    path: Path = field(default_factory=lambda: config_dir() / RUNS_FILE)

    def _load(self) -> dict:
        return read_json(self.path, {"runs": {}})

    def list(self) -> list[RunRecord]:
        out = []
        for data in self._load()["runs"].values():
            try:
                out.append(RunRecord.from_json(data))
            except (RaysamError, TypeError):
                continue  # a damaged or foreign entry is skipped, never used to build paths
        return sorted(out, key=lambda r: r.submitted)

    def get(self, name: str) -> RunRecord:
        data = self._load()["runs"].get(name)
        if data is None:
            raise RaysamError(f"No run named {name!r} in the run index ({self.path}); "
                              "`napari-raysam runs list` shows the known runs.")
        return RunRecord.from_json(data)

    def put(self, record: RunRecord) -> RunRecord:
        safe_name(record.name, "run name")
        with file_lock(self.path):
            data = self._load()
            data["runs"][record.name] = asdict(record)
            write_json_atomic(self.path, data)
        return record

    def update(self, name: str, **changes) -> RunRecord:
        with file_lock(self.path):
            data = self._load()
            if name not in data["runs"]:
                raise RaysamError(f"No run named {name!r} in the run index.")
            data["runs"][name].update(changes)
            write_json_atomic(self.path, data)
            return RunRecord.from_json(data["runs"][name])


def ended_text(record: RunRecord) -> str:
    """How a run ended, for messages: 'was cancelled' or 'is FAILED'."""
    return "was cancelled" if record.cancelled or record.state == "STOPPED" \
        else f"is {record.state}"


def dumps_record(record: RunRecord) -> str:
    return json.dumps(asdict(record), default=str)
