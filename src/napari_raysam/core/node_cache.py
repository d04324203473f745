"""Inputs of a job that live in object storage, copied once to this node and reused.

A base model at ``s3://…/models/<sha>/model.pt`` (here) or a training set at
``s3://…/datasets/<hash>`` (``core.dataset.on_node``) is copied into
``<cache dir>/node/{models,datasets}/<hash>`` on each node that needs it: every file is checked
against its sha256 (the manifest's, or the model's own), the copy appears whole (written under a
temporary name, then renamed) and is reused by later runs. A file lock per entry makes two
workers on one node that start together download it once. Local and shared folders (NFS) are
used where they are.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.paths import cache_dir
from napari_raysam.core.storage import (
    Storage,
    StorageError,
    explain,
    file_sha256,
    is_remote_uri,
    local_path,
    redact,
)

__all__ = ["READY", "input_lock", "model_on_node", "node_cache_dir", "open_input"]

READY = ".complete"


def node_cache_dir() -> Path:
    return cache_dir() / "node"


def input_lock(path: Path):
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=3600)


def open_input(uri: str) -> Storage:
    try:
        return Storage.open(uri, side="the cluster")
    except StorageError as exc:
        raise RaysamError(f"This node cannot read its inputs: {exc}") from None


def model_on_node(spec: str) -> str:
    """A local checkpoint path for a model spec that names an object in storage (uploaded
    by the client as ``models/<sha256>/model.pt``); any other spec is returned unchanged."""
    if not is_remote_uri(spec):
        return local_path(spec)
    storage = open_input(spec)
    path = storage.root
    parts = path.rstrip("/").split("/")
    expected = parts[-2] if len(parts) >= 2 and len(parts[-2]) == 64 else None
    key = expected or hashlib.sha256(redact(spec).encode()).hexdigest()
    dest = node_cache_dir() / "models" / key / "model.pt"
    with input_lock(dest.parent):
        if dest.is_file() and (expected is None or file_sha256(dest) == expected):
            return str(dest)
        try:
            storage.download(path, dest, expected_sha256=expected)
        except OSError as exc:
            raise RaysamError(f"Cannot fetch the base model: {explain(exc, spec, 'the cluster')}") \
                from None
    return str(dest)
