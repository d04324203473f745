"""The model store: fine-tuned models fetched to this computer, registered in ``models.json``.

``run:NAME`` model specs resolve through :func:`registered_model_path`. The registry is a JSON
file rewritten atomically under a file lock, so the dock and the CLI can update it together.
Bottom layer: used by the client (fetch) and by model loading (``core.sam.models``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.paths import data_dir, file_lock, read_json, safe_name, write_json_atomic

MODELS_FILE = "models.json"


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


def register_model(model: RegisteredModel, store: Path | None = None) -> RegisteredModel:
    store = Path(store or model_store_dir())
    safe_name(model.name, "model name")
    path = store / MODELS_FILE
    with file_lock(path):
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


