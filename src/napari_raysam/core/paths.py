"""Where the plugin keeps its own files, and atomic JSON writes for them.

``NAPARI_RAYSAM_CONFIG`` (profiles, local-head state, run index), ``NAPARI_RAYSAM_DATA`` (model
store) and ``NAPARI_RAYSAM_CACHE`` (default local storage) override the platformdirs defaults.
Nothing written here ever holds an auth token.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from napari_raysam.core.errors import RaysamError

APP = "napari-raysam"
#: Run names and file names that come from a (possibly remote) record must match this.
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def config_dir() -> Path:
    override = os.environ.get("NAPARI_RAYSAM_CONFIG")
    if override:
        return Path(override)
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP))


def data_dir() -> Path:
    override = os.environ.get("NAPARI_RAYSAM_DATA")
    if override:
        return Path(override)
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP))


def cache_dir() -> Path:
    override = os.environ.get("NAPARI_RAYSAM_CACHE")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir(APP))


def safe_name(name: str, what: str = "name") -> str:
    """``name`` if it is a plain file/run name (no separators, no ``..``), else RaysamError."""
    if not isinstance(name, str) or not SAFE_NAME.match(name) or name in (".", "..") \
            or ".." in name:
        raise RaysamError(
            f"Refusing the {what} {name!r}: only letters, digits, '.', '_' and '-' are allowed "
            "(no path separators or '..'). The run record is damaged or not from napari-raysam; "
            "remove it from the run index."
        )
    return name


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an OS file lock beside ``path`` (POSIX and Windows alike) for a read-modify-write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(path.with_name(f".{path.name}.lock")):
        yield


def write_json_atomic(path: Path, data, mode: int = 0o600) -> None:
    """Write JSON to a temporary sibling, fsync, then ``os.replace`` it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, default):
    """The JSON in ``path``, ``default`` when it does not exist; a clear error when damaged."""
    path = Path(path)
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise RaysamError(
            f"{path} is not valid JSON ({exc}); fix or delete it (it will be recreated)."
        ) from None
