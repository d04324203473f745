"""Embeddings on the cluster, job side: every plane of an image or stack encoded by one model,
in the embedding cache's own format, written to storage for the Segment dock to pull.

The client uploads the planes as the SAM input pixels it would encode itself (``(H, W, 3)``
uint8 TIFFs, one per plane, see ``core.runs.embed``); a plane of a min-max model, whose tiles
are scaled on their own as micro-sam does, is uploaded as its chosen channels
(``planeNNNNN.minmax-source.tif``) and scaled here by that one fixed rule. So the cluster needs
no normalisation policy and computes
exactly the cache key the dock looks up: pixels + encoder weights + tiling + precision
(``EmbeddingCache.key``). The precision is the client's (a GPU cluster's ``auto``
could pick bf16 where the laptop reads fp32 entries).

In storage an entry is ``embeddings/<key>.zarr/…`` (the zarr group's files, each with its
``.sha256``) and ``embeddings/<key>.json`` (its files and their sha256), written last: an entry
without it is incomplete and is computed again; one with it is reused by any later job.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_raysam.core.apply.pool import ModelActor, Progress, event_sink, run_pool
from napari_raysam.core.apply.table import RESULTS_FILE
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.images import ImagePolicy, SamInput, to_sam_input
from napari_raysam.core.storage import Storage, StorageError, explain, file_sha256, redact

EMBEDDINGS = "embeddings"
PRECISIONS = ("fp32", "bf16")


def entry_dir(key: str) -> tuple[str, str]:
    """Where an entry's zarr files are, under the storage root."""
    return (EMBEDDINGS, f"{key}.zarr")


def manifest_path(storage: Storage, key: str) -> str:
    """The entry's manifest (``{"files": {relative path: sha256}}``), written last."""
    return storage.path(EMBEDDINGS, f"{key}.json")


def read_manifest(storage: Storage, key: str) -> dict[str, str] | None:
    """The files of a complete entry (None when there is none)."""
    data = storage.read_bytes(manifest_path(storage, key))
    if data is None:
        return None
    try:
        files = json.loads(data)["files"]
    except (ValueError, KeyError, TypeError):
        return None
    return files if isinstance(files, dict) and files else None


SOURCE = ".minmax-source"  # a plane file of chosen channels, scaled on the cluster (min-max)


def read_plane(name: str, data: bytes) -> SamInput:
    """A plane as uploaded (see :func:`write_plane`); ValueError when it is not one."""
    import tifffile

    array = tifffile.imread(io.BytesIO(data))
    if name.endswith(SOURCE + ".tif"):
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3 or not 1 <= array.shape[-1] <= 3:
            raise ValueError(f"a min-max source must be (H, W, 1-3), got {array.shape}")
        return to_sam_input(array, ImagePolicy(channel_axis=2))
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"a plane must be (H, W, 3) uint8, got {array.shape} {array.dtype}")
    return SamInput(array)


@dataclass
class EmbedConfig:
    """One embedding run: planes and entries are paths under ``storage``."""

    storage: str  # the profile's storage URI (root)
    inputs: str  # folder of plane TIFFs, relative to ``storage``
    model: str  # a model spec the cluster can load
    name: str  # the run name: events and results go to runs/<name>/
    precision: str = "fp32"  # the client's resolved precision (part of the key)
    workers: int = 1
    threads: int = 1


class Embedder(ModelActor):
    """One model per actor of the pool: each item is one plane, encoded and uploaded."""

    fields = ("name", "path")

    def __init__(self, model_spec: str, storage_uri: str, precision: str, threads: int):
        from napari_raysam.core.sam.embeddings import EmbeddingCache

        super().__init__(model_spec, storage_uri, threads)
        self.precision = precision
        self.cache = EmbeddingCache(tempfile.mkdtemp(prefix="raysam-embed-"))

    def one(self, name: str, path: str) -> dict:
        """Encode one plane unless storage holds its entry; the row names the plane's key."""
        from napari_raysam.core.sam.embeddings import Tiling

        st = self.storage
        try:
            image = read_plane(name, st.read_bytes(path) or b"")
        except (OSError, ValueError) as exc:  # ends the run with the reason (core.apply.pool)
            raise StorageError(f"Cannot read the plane {name} from the storage ({exc}); press "
                               "Compute on cluster again to upload it anew.") from None
        tiling = Tiling.auto(image.shape, self.model.img_size)
        key = self.cache.key(self.model, image, tiling, self.precision)
        if read_manifest(st, key) is not None:
            return {"plane": name, "key": key, "reused": True}
        self.cache.get_or_compute(self.model, image, tiling, self.precision)
        entry = self.cache.path(key)
        try:
            files = {p.relative_to(entry).as_posix(): file_sha256(p)
                     for p in sorted(entry.rglob("*")) if p.is_file()}
            st.upload_files(entry, files, entry_dir(key))
            st.write_bytes(manifest_path(st, key), json.dumps({"files": files}).encode())
        except OSError as exc:
            raise StorageError(f"Cannot write the embedding of {name}. "
                               f"{explain(exc, st.uri, 'the cluster')} Finished planes are "
                               "kept: run it again to do the rest.") from None
        finally:
            shutil.rmtree(entry, ignore_errors=True)
        return {"plane": name, "key": key, "reused": False}


def run_embed(config: EmbedConfig, on_event: Callable[[dict], None] | None = None) -> dict:
    """Encode every plane in ``config.inputs``; returns the summary (``end`` event). Results
    (``runs/<name>/results.json``): one row per plane, ``{"plane", "key", "reused"}``."""
    if config.precision not in PRECISIONS:
        raise RaysamError(f"--precision must be one of {', '.join(PRECISIONS)} (the client's "
                          f"resolved precision), not {config.precision!r}.")
    storage = Storage.open(config.storage, side="the cluster")
    emit = event_sink(storage, config.name, on_event)
    names = sorted(n for n, is_dir in storage.list(config.inputs)
                   if not is_dir and n.endswith(".tif"))
    if not names:
        raise RaysamError(f"No plane images (.tif) in {redact(storage.uri_of(config.inputs))}.")
    items = [{"name": n, "path": storage.path(config.inputs, n)} for n in names]
    emit({"event": "start", "kind": "embed", "total": len(items), "workers": config.workers,
          "model": config.model, "precision": config.precision})
    rows: list[dict] = []
    progress = Progress(emit, len(items), 0, unit="planes", counted="done")
    run_pool(items, Embedder, (config.model, config.storage, config.precision, config.threads),
             config.workers, config.threads, progress, rows.append)
    rows.sort(key=lambda r: r["plane"])
    run = storage.child("runs", config.name)
    run.write_bytes(run.path(RESULTS_FILE), json.dumps(rows).encode())
    summary = {"event": "end", "status": "ok", "total": len(rows),
               "computed": sum(not r["reused"] for r in rows),
               "reused": sum(r["reused"] for r in rows), "seconds": progress.elapsed()}
    emit(summary)
    return summary


def plane_name(i: int, source: bool = False) -> str:
    """The file name of plane ``i`` (sorted names keep the planes' order)."""
    return f"plane{i:05d}{SOURCE if source else ''}.tif"


def write_plane(folder: Path, i: int, image: np.ndarray | SamInput) -> Path:
    """Write one plane as the job reads it (lossless, zlib): its SAM input, or when its tiles
    are scaled on their own, the channels they are scaled from (the whole-image input is
    scaled from them the same way, so either key, tiled or not, comes out the same)."""
    import tifffile

    source = image.source if isinstance(image, SamInput) else None
    rgb = image.rgb if isinstance(image, SamInput) else image
    path = folder / plane_name(i, source=source is not None)
    tifffile.imwrite(path, np.ascontiguousarray(rgb if source is None else source),
                     compression="zlib")
    return path


__all__ = ["EMBEDDINGS", "EmbedConfig", "Embedder", "entry_dir", "manifest_path",
           "plane_name", "read_manifest", "read_plane", "run_embed", "write_plane"]
