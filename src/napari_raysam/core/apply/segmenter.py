"""Segment one input file and write its labels to storage: the work of one actor of the pool,
and of a plain loop (the same function, so both give the same labels).

Outputs are content-addressed: ``applied/<model key>/<input sha256>.tif`` (labels, uint16 or
uint32) and ``.json`` (the table row), the row written last. A re-run with the same model and
input finds the row and does nothing; a worker killed mid-image leaves no row, so the image is
done again (never lost, never listed twice).
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from dataclasses import asdict, dataclass

import numpy as np

from napari_raysam.core.apply.inputs import InputSkipped, read_planes
from napari_raysam.core.apply.pool import ModelActor
from napari_raysam.core.images import ImageError
from napari_raysam.core.storage import SIDECAR, Storage, StorageError, explain


@dataclass(frozen=True)
class ApplySettings:
    """How every image is segmented (part of the output key, so changed settings recompute)."""

    points_per_side: int = 16
    min_size: int = 10
    threads: int = 1


def output_dir(model_key: str) -> tuple[str, ...]:
    return ("applied", model_key)


def row_path(storage: Storage, model_key: str, sha256: str) -> str:
    return storage.path(*output_dir(model_key), f"{sha256}.json")


def segment_planes(model, planes, settings: ApplySettings, cache_root: str) -> np.ndarray:
    """Labels for each plane (stacked for a Z stack), with the micro-sam instance generator;
    pixels scaled with the normalisation the model was trained with."""
    from napari_raysam.core.images import ImagePolicy, to_sam_input
    from napari_raysam.core.sam.embeddings import EmbeddingCache
    from napari_raysam.core.sam.segment import automatic

    cache = EmbeddingCache(cache_root)
    out = []
    for plane in planes.planes:
        sam_input = to_sam_input(
            plane, model.image_policy(ImagePolicy(channel_axis=planes.channel_axis)))
        embeddings = cache.get_or_compute(model, sam_input, precision="fp32")
        out.append(automatic(model, sam_input.rgb, embeddings,
                             points_per_side=settings.points_per_side,
                             min_size=settings.min_size))
        cache.clear()
    return np.stack(out) if planes.stack else out[0]


def table_row(name: str, sha256: str, labels: np.ndarray | None, status: str,
              reason: str = "", labels_path: str = "") -> dict:
    """One row of the results table: objects and their areas in pixels (summed over planes)."""
    areas = []
    if labels is not None:
        for plane in (labels if labels.ndim == 3 else labels[None]):
            counts = np.bincount(plane.ravel())[1:]
            areas += [int(a) for a in counts if a]
    return {"image": name, "sha256": sha256, "status": status, "reason": reason,
            "objects": len(areas), "mean_area": float(np.mean(areas)) if areas else 0.0,
            "median_area": float(np.median(areas)) if areas else 0.0,
            "labels": labels_path, "areas": areas}


def _tiff_bytes(labels: np.ndarray) -> bytes:
    import tifffile

    dtype = np.uint16 if int(labels.max(initial=0)) < 65536 else np.uint32
    buf = io.BytesIO()
    tifffile.imwrite(buf, labels.astype(dtype), compression="zlib")
    return buf.getvalue()


class Segmenter(ModelActor):
    """One model per actor of the pool: each item is one input file, segmented into labels."""

    fields = ("name", "path", "sha256")

    def __init__(self, model_spec: str, storage_uri: str, model_key: str,
                 settings: ApplySettings):
        super().__init__(model_spec, storage_uri, settings.threads)
        self.key, self.settings = model_key, settings
        self.cache_root = tempfile.mkdtemp(prefix="raysam-apply-")

    def one(self, name: str, path: str, sha256: str) -> dict:
        """Segment one input; the row says ``ok`` or ``skipped`` with the reason. StorageError
        (naming the storage and the fix) when its results cannot be written."""
        st = self.storage
        files = {}
        try:
            planes = read_planes(name, st.read_bytes(path) or b"")
            labels = segment_planes(self.model, planes, self.settings, self.cache_root)
        except (InputSkipped, ImageError) as exc:
            row = table_row(name, sha256, None, "skipped", str(exc))
        else:
            rel = "/".join((*output_dir(self.key), f"{sha256}.tif"))
            data = _tiff_bytes(labels)
            files[st.path(rel)] = data
            files[st.path(rel) + SIDECAR] = hashlib.sha256(data).hexdigest().encode()
            row = table_row(name, sha256, labels, "ok", labels_path=rel)
        files[row_path(st, self.key, sha256)] = json.dumps(row).encode()  # the row last
        self._write_all(name, files)
        return row

    def _write_all(self, name: str, files: dict[str, bytes]) -> None:
        """Write ``files`` in order; when the storage refuses one (full, read-only), remove
        those already written, so the image has no outputs and a re-run does it again."""
        written = []
        try:
            for path, data in files.items():
                self.storage.write_bytes(path, data)
                written.append(path)
        except OSError as exc:
            for path in written:
                self.storage.remove(path)
            raise StorageError(
                f"Could not write the results of {name}. "
                f"{explain(exc, self.storage.uri, 'the cluster')} Images finished before are "
                "kept: run the same command again to do the rest.") from None


def settings_key(settings: ApplySettings) -> dict:
    return {k: v for k, v in asdict(settings).items() if k != "threads"}
