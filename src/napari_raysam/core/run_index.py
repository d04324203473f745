"""The local run index (``runs.json`` in the config dir) and the model store registry.

Both are JSON files rewritten atomically under an advisory file lock, so the dock and the CLI
can update them at the same time. Neither ever holds an auth token: a run keeps the *name* of
the environment variable holding it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import RaysamError
from .paths import config_dir, data_dir, read_json, safe_name, write_json_atomic

RUNS_FILE = "runs.json"
MODELS_FILE = "models.json"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock  # OS locks on POSIX and Windows alike

    with FileLock(path.with_name(f".{path.name}.lock")):
        yield


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
        with _locked(self.path):
            data = self._load()
            data["runs"][record.name] = asdict(record)
            write_json_atomic(self.path, data)
        return record

    def update(self, name: str, **changes) -> RunRecord:
        with _locked(self.path):
            data = self._load()
            if name not in data["runs"]:
                raise RaysamError(f"No run named {name!r} in the run index.")
            data["runs"][name].update(changes)
            write_json_atomic(self.path, data)
            return RunRecord.from_json(data["runs"][name])


@dataclass
class RegisteredModel:
    """A fine-tuned model in the local store; ``path`` is a model spec for the Segment dock.

    ``partial``: built from the last checkpoint (``epoch``) of a run that failed or was
    cancelled; its name is ``<run>.partial-epoch<N>`` (spec ``run:<run>.partial-epoch<N>``).
    """

    name: str
    path: str
    base_model: str
    metrics: dict
    sha256: str
    run: str
    registered: str
    report: str | None = None
    curves: str | None = None
    partial: bool = False
    epoch: int | None = None


def partial_model_name(run: str, epoch: int) -> str:
    """The registry name of a run's partial model taken at ``epoch``."""
    return safe_name(f"{run}.partial-epoch{int(epoch)}", "model name")


def model_store_dir() -> Path:
    return data_dir() / "models"


def registered_model_path(name: str) -> str:
    """The checkpoint of the registered model ``name`` (``run:NAME``); a clear error naming
    the known ones when there is none."""
    known = {m.name: m.path for m in list_registered_models()}
    if name not in known:
        raise RaysamError(f"No fine-tuned model named {name!r} on this computer; fetched runs: "
                          f"{', '.join(known) or 'none yet'}. Fetch the run first.")
    return known[name]


def model_dest(store: Path | None, name: str) -> tuple[Path, Path]:
    """(model store, ``<store>/<name>``); RaysamError when ``name`` would leave the store."""
    store = Path(store or model_store_dir()).resolve()
    dest = (store / name).resolve()
    if dest.parent != store:
        raise RaysamError(f"Refusing to write outside the model store for run {name!r}.")
    return store, dest


def ended_text(record: RunRecord) -> str:
    """How a run ended, for messages: 'was cancelled' or 'is FAILED'."""
    return "was cancelled" if record.cancelled or record.state == "STOPPED" \
        else f"is {record.state}"


def register_model(model: RegisteredModel, store: Path | None = None) -> RegisteredModel:
    store = Path(store or model_store_dir())
    safe_name(model.name, "model name")
    path = store / MODELS_FILE
    with _locked(path):
        data = read_json(path, {"models": {}})
        data["models"][model.name] = asdict(model)
        write_json_atomic(path, data, mode=0o644)
    return model


def list_registered_models(store: Path | None = None) -> list[RegisteredModel]:
    """Registered fine-tuned models whose checkpoint file still exists, newest last."""
    path = Path(store or model_store_dir()) / MODELS_FILE
    try:
        data = read_json(path, {"models": {}})
    except RaysamError:
        return []
    names = {f.name for f in fields(RegisteredModel)}
    out = []
    for m in data.get("models", {}).values():
        try:
            model = RegisteredModel(**{k: v for k, v in m.items() if k in names})
        except TypeError:
            continue
        if Path(model.path).is_file():
            out.append(model)
    return sorted(out, key=lambda m: m.registered)


def dumps_record(record: RunRecord) -> str:
    return json.dumps(asdict(record), default=str)
