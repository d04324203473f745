"""A training set into a storage URI, by content hash: ``datasets/<content hash>/``."""

from __future__ import annotations

from pathlib import Path

from napari_raysam.core.dataset.format import MANIFEST, open_dataset
from napari_raysam.core.storage import Storage


def upload_dataset(storage: Storage, local_dir: str | Path, parallel: int = 8
                   ) -> tuple[str, str, int, int]:
    """Upload a training set to ``datasets/<content hash>/`` under ``storage``; files already
    there are skipped and the manifest goes last. Returns (content hash, URI, files uploaded,
    files skipped)."""
    ts = open_dataset(local_dir)
    files = {}
    for r in ts.samples:
        files[r.image], files[r.labels] = r.image_sha256, r.labels_sha256
    base = ("datasets", ts.content_hash)
    uploaded, skipped = storage.upload_files(Path(ts.path), files, base, last=MANIFEST,
                                             parallel=parallel)
    return ts.content_hash, storage.uri_of(*base), uploaded, skipped
