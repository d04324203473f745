"""Image embeddings: computed once, cached on disk, shaped like micro-sam's.

The cache key is the hash of the SAM input pixels (which already carries the normalisation
policy; for a tiled image, of the pixels its tiles are scaled from, ``images.SamInput``) + the
image encoder's weight fingerprint + tiling + precision. A decoder-only fine-tune
keeps the encoder, so its checkpoint reuses the cached features; any other encoder never does.

Entries are zarr groups in micro-sam's layout (``features`` + ``input_size``/``original_size``,
or one array per tile with ``shape``/``tile_shape``/``halo`` attributes), so micro-sam's
prompt-based and automatic segmentation take them as ``image_embeddings`` unchanged. An entry is
written to a temporary folder and renamed into place: a killed process or a full disk never
leaves a half-written entry under a real key.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.images import POLICY_VERSION, SamInput, as_sam_input, pixel_hash
from napari_raysam.core.sam.fast_encoder import run_encoder
from napari_raysam.core.sam.precision import resolve_precision

Progress = Callable[[int, int], None]
CACHE_VERSION = 1


@dataclass(frozen=True)
class Tiling:
    """Tile shape and halo (pixels) for large images; ``None`` tiles mean one whole image."""

    tile_shape: tuple[int, int] | None = None
    halo: tuple[int, int] | None = None

    @classmethod
    def auto(cls, image_shape: tuple[int, ...], img_size: int) -> Tiling:
        """No tiling up to twice the model's input size; beyond, tiles that fit its input."""
        if max(image_shape[:2]) <= 2 * img_size:
            return cls()
        halo = img_size // 8
        tile = img_size - 2 * halo
        return cls((tile, tile), (halo, halo))


def default_cache_dir() -> Path:
    """The user's cache folder for embeddings (``NAPARI_RAYSAM_CACHE`` overrides)."""
    from napari_raysam.core.paths import cache_dir

    return cache_dir() / "embeddings"


def encode(model, rgb: np.ndarray, precision: str = "fp32") -> tuple[np.ndarray, list, list]:
    """Run the image encoder on one (H, W, 3) uint8 image: (features, input_size, original_size)."""
    import torch

    predictor = model.predictor
    resized = predictor.transform.apply_image(rgb)
    tensor = torch.as_tensor(resized, device=model.device).permute(2, 0, 1)[None].contiguous()
    dtype = torch.bfloat16 if precision == "bf16" else None
    with torch.inference_mode(), torch.autocast(
        device_type=model.device if model.device in ("cuda", "cpu") else "cpu",
        dtype=dtype,
        enabled=dtype is not None,
    ):
        features = run_encoder(model.sam.image_encoder, model.sam.preprocess(tensor))
    return (
        features.float().cpu().numpy(),
        [int(s) for s in resized.shape[:2]],
        [int(s) for s in rgb.shape[:2]],
    )


class EmbeddingCache:
    """Disk cache of image embeddings under one folder."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def key(self, model, image: np.ndarray | SamInput, tiling: Tiling, precision: str) -> str:
        """The entry's key; ``image``: SAM input (``images.to_sam_input``, or its rgb)."""
        image = as_sam_input(image)
        pixels = pixel_hash(image.rgb) if tiling.tile_shape is None else image.tiles_hash()
        spec = json.dumps(
            {
                "cache": CACHE_VERSION,
                "policy": POLICY_VERSION,
                "pixels": pixels,
                "encoder": model.encoder_fingerprint,
                "img_size": model.img_size,
                "tile_shape": tiling.tile_shape,
                "halo": tiling.halo,
                "precision": precision,
            },
            sort_keys=True,
        )
        return hashlib.sha256(spec.encode()).hexdigest()[:40]

    def path(self, key: str) -> Path:
        return self.root / f"{key}.zarr"

    def get_or_compute(
        self,
        model,
        image: np.ndarray | SamInput,
        tiling: Tiling | None = None,
        precision: str = "auto",
        progress: Progress | None = None,
    ) -> dict:
        """Embeddings for ``image`` (SAM input from ``images.to_sam_input``, or a bare rgb
        whose tiles are cut from it); computed on a miss.
        ``precision``: auto/fp32/bf16 (``core.sam.precision``); part of the cache key."""
        image = as_sam_input(image)
        tiling = tiling or Tiling.auto(image.shape, model.img_size)
        precision = resolve_precision(precision, model.device).precision
        key = self.key(model, image, tiling, precision)
        final = self.path(key)
        expected = _expected_entry(model, image.shape[:2], tiling)
        if final.is_symlink() or (final.exists() and not final.is_dir()):
            final.unlink()  # never follow or read what we did not write
        elif final.exists():
            try:
                return _read_entry(final, expected)
            except Exception:  # a damaged or foreign entry: drop it and compute again
                shutil.rmtree(final, ignore_errors=True)
        tmp = self.staging(key)
        try:
            _write_entry(tmp, model, image, tiling, precision, progress)
            try:
                os.replace(tmp, final)
            except OSError:
                if not final.is_dir() or final.is_symlink():  # another process may have won
                    raise
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise RaysamError(
                    f"No disk space left to cache embeddings in {self.root}. Free some space, "
                    "clear the cache, or point NAPARI_RAYSAM_CACHE at a larger disk."
                ) from exc
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return _read_entry(final, expected)

    def has(self, key: str) -> bool:
        """Whether an entry is stored under ``key`` (checked when it is read)."""
        path = self.path(key)
        return path.is_dir() and not path.is_symlink()

    def staging(self, key: str) -> Path:
        """A fresh temporary folder in the cache for an entry written elsewhere (see
        :meth:`adopt`); interrupted ones are removed by :meth:`clear`."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f".{key}.tmp-{uuid.uuid4().hex[:8]}"

    def adopt(self, key: str, folder: Path, model, image_shape: tuple[int, ...],
              tiling: Tiling | None = None) -> Path:
        """Move an entry written elsewhere (e.g. pulled from a cluster into :meth:`staging`)
        into the cache under ``key``, after checking its layout fits the model and an image of
        ``image_shape``; a foreign or damaged entry is removed and refused (RaysamError)."""
        tiling = tiling or Tiling.auto(image_shape, model.img_size)
        try:
            _read_entry(folder, _expected_entry(model, image_shape, tiling))
        except Exception as exc:  # noqa: BLE001 - whatever is wrong, nothing is kept
            shutil.rmtree(folder, ignore_errors=True)
            raise RaysamError(f"The embedding {key} does not fit this image and model "
                              f"({exc}); it was not added to the cache.") from None
        final = self.path(key)
        try:
            os.replace(folder, final)
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
            if not self.has(key):  # another process may have put the same entry first
                raise
        return final

    def size_bytes(self) -> int:
        """Bytes under the cache folder (one walk; files that vanish meanwhile, e.g. a write
        being renamed into place by another thread, are skipped)."""
        total = 0
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                try:
                    total += os.stat(os.path.join(folder, name), follow_symlinks=False).st_size
                except OSError:
                    pass
        return total

    def entries(self) -> list[Path]:
        return sorted(self.root.glob("*.zarr")) if self.root.exists() else []

    def clear(self) -> int:
        """Delete every entry (and leftovers of interrupted writes); return bytes freed."""
        freed = self.size_bytes()
        if self.root.exists():
            for child in self.root.iterdir():
                if child.is_dir() and (child.suffix == ".zarr" or child.name.startswith(".")):
                    shutil.rmtree(child, ignore_errors=True)
        return freed


def _write_entry(path: Path, model, image: SamInput, tiling: Tiling, precision: str,
                 progress) -> None:
    import zarr

    root = zarr.open_group(str(path), mode="w")
    if tiling.tile_shape is None:
        if progress:
            progress(0, 1)
        features, input_size, original_size = encode(model, image.rgb, precision)
        root.create_array("features", data=features)
        root.attrs.update(input_size=input_size, original_size=original_size)
        if progress:
            progress(1, 1)
        return
    from bioimage_cpp.utils import Blocking  # micro-sam's tiling, so tile ids match its own

    blocking = Blocking([0, 0], list(image.shape[:2]), list(tiling.tile_shape))
    group = root.require_group("features")
    group.attrs.update(
        shape=list(image.shape[:2]), tile_shape=list(tiling.tile_shape), halo=list(tiling.halo)
    )
    n_tiles = blocking.number_of_blocks
    for tile_id in range(n_tiles):
        if progress:
            progress(tile_id, n_tiles)
        outer = blocking.get_block_with_halo(tile_id, list(tiling.halo)).outer_block
        crop = image.tile(slice(outer.begin[0], outer.end[0]), slice(outer.begin[1], outer.end[1]))
        features, input_size, original_size = encode(model, crop, precision)
        array = group.create_array(str(tile_id), data=features)
        array.attrs.update(input_size=input_size, original_size=original_size)
    root.attrs.update(input_size=None, original_size=None)
    if progress:
        progress(n_tiles, n_tiles)


@dataclass(frozen=True)
class _Expected:
    """What an entry for one image, model and tiling must look like (checked before reading)."""

    features: tuple[int, ...]  # (1, C, h, w) of one encoder output
    image_shape: tuple[int, int]
    img_size: int
    tiling: Tiling
    n_tiles: int


def _expected_entry(model, image_shape, tiling: Tiling) -> _Expected:
    pe = model.sam.prompt_encoder
    n_tiles = 0
    if tiling.tile_shape is not None:
        pairs = zip(image_shape[:2], tiling.tile_shape, strict=True)
        n_tiles = math.prod(-(-s // t) for s, t in pairs)
    return _Expected((1, int(pe.embed_dim), *map(int, pe.image_embedding_size)),
                     tuple(int(s) for s in image_shape[:2]), int(model.img_size), tiling,
                     n_tiles)


def _check_sizes(attrs, original: tuple[int, int] | None, img_size: int, limit) -> tuple:
    """``input_size``/``original_size`` attributes: two positive ints each, within bounds."""
    sizes = []
    for name in ("input_size", "original_size"):
        value = attrs.get(name)
        if not (isinstance(value, list) and len(value) == 2
                and all(type(v) is int and 0 < v for v in value)):
            raise ValueError(f"bad {name}: {value!r}")
        sizes.append(tuple(value))
    input_size, original_size = sizes
    if max(input_size) > img_size or (original and original_size != original) \
            or any(o > b for o, b in zip(original_size, limit, strict=True)):
        raise ValueError(f"sizes {input_size}, {original_size} do not fit this image")
    return list(input_size), list(original_size)


def _check_array(array, shape: tuple[int, ...]) -> None:
    import zarr

    if not isinstance(array, zarr.Array) or tuple(array.shape) != shape \
            or np.dtype(array.dtype) != np.float32:
        raise ValueError(f"features {getattr(array, 'shape', '?')} are not {shape} float32")


def _read_entry(path: Path, expected: _Expected) -> dict:
    """Open an entry after checking its metadata against ``expected`` (shapes, dtype, sizes),
    so a foreign or damaged entry is refused before any data is read."""
    import zarr

    root = zarr.open_group(str(path), mode="r")
    features = root["features"]
    if expected.tiling.tile_shape is None:
        _check_array(features, expected.features)
        sizes = _check_sizes(root.attrs, expected.image_shape, expected.img_size,
                             expected.image_shape)
        return {"features": features[:], "input_size": sizes[0], "original_size": sizes[1]}
    tiling = expected.tiling
    attrs = features.attrs
    if [attrs.get("shape"), attrs.get("tile_shape"), attrs.get("halo")] != [
            list(expected.image_shape), list(tiling.tile_shape), list(tiling.halo)]:
        raise ValueError("tiling attributes do not match")
    limit = [t + 2 * h for t, h in zip(tiling.tile_shape, tiling.halo, strict=True)]
    for tile_id in range(expected.n_tiles):
        tile = features[str(tile_id)]
        _check_array(tile, expected.features)
        _check_sizes(tile.attrs, None, expected.img_size, limit)
    if len(list(features.keys())) != expected.n_tiles:
        raise ValueError("unexpected tiles")
    return {"features": features, "input_size": None, "original_size": None}
