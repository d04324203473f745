"""A training set in object storage, copied once to this node (see ``core.node_cache``)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil

from napari_raysam.core.dataset.format import MANIFEST, open_dataset
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.node_cache import READY, input_lock, node_cache_dir, open_input
from napari_raysam.core.storage import explain, is_remote_uri, local_path, redact


def dataset_on_node(uri: str) -> str:
    """A local folder holding the training set at ``uri`` (the folder itself when local)."""
    if not is_remote_uri(uri):
        return local_path(uri)
    storage = open_input(uri)
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
    with input_lock(dest):
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
