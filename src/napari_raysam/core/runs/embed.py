"""Embeddings computed on the cluster, client side: the Segment dock's "Compute on cluster".

:func:`submit_embed` computes each plane's SAM input and cache key here (the pixels the dock
would encode), uploads only the planes the local cache lacks, and submits
``python -m napari_raysam.apply … --embeddings`` like any run (same index, follow, cancel).
:func:`pull_embeddings` then copies each finished entry into the local embedding cache under the
key computed here: the job computed its key independently from the same pixels, weights, tiling
and precision, so an entry found under it is the one this computer would have computed. Each
file is checked against the sha256 the job recorded, and the entry's layout against the model
and image before it is renamed into place.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import numpy as np

from napari_raysam.core.apply.embed import (
    PRECISIONS,
    entry_dir,
    read_manifest,
    write_plane,
)
from napari_raysam.core.apply.table import RESULTS_FILE
from napari_raysam.core.cluster import ClusterProfile
from napari_raysam.core.cluster.local_head import LocalHead
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.events import now_iso
from napari_raysam.core.images import SamInput, as_sam_input
from napari_raysam.core.paths import safe_name
from napari_raysam.core.runs.apply import apply_entry, fresh_apply_name, upload_inputs
from napari_raysam.core.runs.records import RunIndex, RunRecord
from napari_raysam.core.runs.submit import open_cluster, start_job, upload_base_model
from napari_raysam.core.sam.embeddings import EmbeddingCache, Tiling
from napari_raysam.core.storage import Storage

EMBED = "embed"


def plan_planes(model, planes: Iterable[np.ndarray | SamInput], cache: EmbeddingCache,
                precision: str, folder: Path) -> tuple[list[dict], int]:
    """Write every plane whose embedding ``cache`` lacks into ``folder``; returns the planned
    planes (``{"name", "key", "shape"}``) and how many planes there were."""
    planned, n = [], 0
    for i, plane in enumerate(planes):
        n += 1
        image = as_sam_input(plane)
        tiling = Tiling.auto(image.shape, model.img_size)
        key = cache.key(model, image, tiling, precision)
        if not cache.has(key):
            path = write_plane(folder, i, image)
            planned.append({"name": path.name, "key": key, "shape": list(image.shape[:2])})
    return planned, n


def submit_embed(profile: ClusterProfile, model, planes: Iterable[np.ndarray | SamInput],
                 precision: str, cache: EmbeddingCache | None = None, workers: int = 1,
                 threads: int = 1, index: RunIndex | None = None,
                 head: LocalHead | None = None, preflight: bool = True) -> RunRecord | None:
    """Check the cluster and storage, then upload the planes (SAM input: ``images.SamInput``
    or its ``(H, W, 3)`` uint8 rgb) whose embedding the local cache lacks and submit the job
    (``kind="embed"``). ``precision`` is this computer's resolved one (fp32/bf16): the
    entries must match its lookups. None when every plane is cached already (nothing is
    submitted)."""
    if precision not in PRECISIONS:
        raise RaysamError(f"precision must be one of {', '.join(PRECISIONS)}, not "
                          f"{precision!r}.")
    if workers < 1 or threads < 1:
        raise RaysamError("workers and threads must be at least 1.")
    cache = cache or EmbeddingCache()
    index = index or RunIndex()
    client, storage = open_cluster(profile, head, preflight)
    with tempfile.TemporaryDirectory(prefix="raysam-planes-") as tmp:
        planned, n = plan_planes(model, planes, cache, precision, Path(tmp))
        if n == 0:
            raise RaysamError("The image has no planes to embed.")
        if not planned:
            return None
        digest, rel = upload_inputs(storage, tmp)
    spec = upload_base_model(storage, model.spec)
    name = "embed-" + fresh_apply_name().removeprefix("apply-")
    entry = apply_entry(profile, storage, rel, spec, name, workers, threads, "--embeddings",
                        "--precision", precision)
    record = RunRecord(
        name=name, profile=profile.name, address=profile.address, storage=storage.uri,
        dataset_hash=digest, dataset_uri=storage.uri_of(rel),
        config={"model": model.spec, "precision": precision, "workers": workers,
                "threads": threads, "planes": planned},
        submitted=now_iso(), token_env=profile.token_env, kind=EMBED)
    return start_job(client, profile, index, record, entry)


def pull_embeddings(record: RunRecord, model, cache: EmbeddingCache | None = None) -> dict:
    """Copy the run's finished entries into ``cache`` (sha256- and layout-checked, each entry
    whole or not at all). ``model``: the one the run was submitted with. Works on a cancelled
    run too (what was finished comes back). Returns ``{"pulled", "present", "missing"}``
    (counts); RaysamError when the cluster's entries cannot match this computer's."""
    if record.kind != EMBED:
        raise RaysamError(f"{record.name} is not an embedding run.")
    cache = cache or EmbeddingCache()
    storage = Storage.open(record.storage)
    planes = record.config.get("planes") or []
    counts = {"pulled": 0, "present": 0, "missing": 0}
    refused: list[RaysamError] = []
    for plane in planes:
        key = plane["key"]
        if cache.has(key):
            counts["present"] += 1
            continue
        files = read_manifest(storage, key)
        if files is None:
            counts["missing"] += 1
            continue
        try:
            _pull_entry(storage, cache, key, files, model, tuple(plane["shape"]))
            counts["pulled"] += 1
        except RaysamError as exc:  # the other planes are still pulled
            refused.append(exc)
    if refused:
        raise refused[0]
    if counts["missing"]:
        _explain_missing(storage, record, planes)
    return counts


def _pull_entry(storage: Storage, cache: EmbeddingCache, key: str, files: dict[str, str],
                model, shape: tuple[int, ...]) -> None:
    tmp = cache.staging(key)
    try:
        for rel, sha in files.items():
            parts = PurePosixPath(rel).parts
            if not parts or PurePosixPath(rel).is_absolute() or ".." in parts \
                    or any("\\" in p or ":" in p for p in parts):  # Windows: C:x, ..\x
                raise RaysamError(f"The embedding {key} in the storage names a file outside "
                                  f"its folder ({rel!r}); it was not used.")
            storage.download(storage.path(*entry_dir(key), rel), tmp.joinpath(*parts), sha)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cache.adopt(key, tmp, model, shape)


def _explain_missing(storage: Storage, record: RunRecord, planes: list[dict]) -> None:
    """Raise when the job finished but computed other keys than this computer (other model
    weights, pixels or precision); a run that ended early just has fewer entries."""
    run = storage.child("runs", safe_name(record.name, "run name"))
    data = run.read_bytes(run.path(RESULTS_FILE))
    if data is None:
        return
    try:
        theirs = {r["plane"]: r["key"] for r in json.loads(data)}
    except (ValueError, KeyError, TypeError):
        return  # a damaged results file explains nothing; the counts say what is missing
    differ = [p["name"] for p in planes if theirs.get(p["name"], p["key"]) != p["key"]]
    if differ:
        raise RaysamError(
            f"The cluster's embeddings of {len(differ)} plane(s) do not match this computer's: "
            f"it loaded other weights for {record.config.get('model')!r} (or another "
            "precision, or read other pixels). Nothing was added for them; make the model the "
            "same on both sides (a run:NAME or checkpoint file is uploaded as is) and compute "
            "again.")


__all__ = ["EMBED", "plan_planes", "pull_embeddings", "submit_embed"]
