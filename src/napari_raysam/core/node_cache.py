"""Inputs of a job that live in object storage, copied once to this node and reused.

A training set at ``s3://…/datasets/<hash>`` or a base model at ``s3://…/models/<sha>/model.pt``
is copied into ``<cache dir>/node/{datasets,models}/<hash>`` on each node that needs it: every
file is checked against its sha256 (the manifest's, or the model's own), the folder appears
whole (written under a temporary name, then renamed) and is reused by later runs. A file lock
per entry makes two workers on one node that start together download it once. Local and
shared folders (NFS) are used where they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

from .errors import RaysamError
from .paths import cache_dir
from .storage import (
    Storage,
    StorageError,
    explain,
    file_sha256,
    is_remote_uri,
    local_path,
    redact,
)

__all__ = ["dataset_on_node", "model_on_node", "node_cache_dir"]

READY = ".complete"


def node_cache_dir() -> Path:
    return cache_dir() / "node"


def _lock(path: Path):
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=3600)


def _open(uri: str) -> Storage:
    try:
        return Storage.open(uri, side="the cluster")
    except StorageError as exc:
        raise RaysamError(f"This node cannot read its inputs: {exc}") from None


def dataset_on_node(uri: str) -> str:
    """A local folder holding the training set at ``uri`` (the folder itself when local)."""
    from .dataset import MANIFEST, open_dataset

    if not is_remote_uri(uri):
        return local_path(uri)
    storage = _open(uri)
    try:
        manifest = storage.read_bytes(storage.path(MANIFEST))
    except OSError as exc:
        raise RaysamError(f"Cannot read the training set's manifest: "
                          f"{explain(exc, uri, 'the cluster')}") from None
    if manifest is None:
        raise RaysamError(f"{redact(uri)} holds no {MANIFEST}: the upload did not finish or the "
                          "URI names no training set. Submit the run again (it re-uploads).")
    key = hashlib.sha256(manifest).hexdigest()[:32]
    dest = node_cache_dir() / "datasets" / key
    with _lock(dest):
        if (dest / READY).is_file():
            return str(dest)
        tmp = dest.with_name(f".{key}.{secrets.token_hex(4)}")
        try:
            tmp.mkdir(parents=True)
            (tmp / MANIFEST).write_bytes(manifest)
            ts = open_dataset(tmp)
            for record in ts.samples:
                for rel, sha in ((record.image, record.image_sha256),
                                 (record.labels, record.labels_sha256)):
                    target = (tmp / rel).resolve()
                    if tmp.resolve() not in target.parents:
                        raise RaysamError(f"The training set at {redact(uri)} names a file "
                                          f"outside its folder ({rel!r}); export it again.")
                    storage.download(storage.path(rel), target, expected_sha256=sha)
            if ts.manifest_content_hash != ts.content_hash:
                raise RaysamError(f"The training set at {redact(uri)} does not match its "
                                  "manifest's content hash; upload it again.")
            (tmp / READY).write_text(json.dumps({"uri": redact(uri)}))
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)


def model_on_node(spec: str) -> str:
    """A local checkpoint path for a model spec that names an object in storage (uploaded
    by the client as ``models/<sha256>/model.pt``); any other spec is returned unchanged."""
    if not is_remote_uri(spec):
        return local_path(spec)
    storage = _open(spec)
    path = storage.root
    parts = path.rstrip("/").split("/")
    expected = parts[-2] if len(parts) >= 2 and len(parts[-2]) == 64 else None
    key = expected or hashlib.sha256(redact(spec).encode()).hexdigest()
    dest = node_cache_dir() / "models" / key / "model.pt"
    with _lock(dest.parent):
        if dest.is_file() and (expected is None or file_sha256(dest) == expected):
            return str(dest)
        try:
            storage.download(path, dest, expected_sha256=expected)
        except OSError as exc:
            raise RaysamError(f"Cannot fetch the base model: {explain(exc, spec, 'the cluster')}") \
                from None
    return str(dest)
