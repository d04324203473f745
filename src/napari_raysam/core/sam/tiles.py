"""Tiles of the model's input size cut from images, and their 8 dihedral variants.

Shared by training (epoch tiles, augmentation) and evaluation (a fixed grid). A tile names an
image by its index in a list of samples (anything with ``rgb`` and ``labels`` arrays, and an
optional ``source``: the channels a tile is scaled from on its own, ``images.SamInput``; as
micro-sam's training loader scales each patch, and as tiled inference scales each tile).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from napari_raysam.core.images import SamInput, scaled_per_tile
from napari_raysam.core.sam import prompts


@dataclass(frozen=True)
class Tile:
    sample: int  # index into the worker's samples
    y0: int
    x0: int
    variant: int = 0  # dihedral variant 0..7


def tile_origins(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """Top-left corners of a grid of ``size`` tiles covering the image (evenly overlapping)."""

    def axis(n: int) -> list[int]:
        if n <= size:
            return [0]
        k = math.ceil(n / size)
        return [round(i * (n - size) / (k - 1)) for i in range(k)]

    return [(y, x) for y in axis(height) for x in axis(width)]


def crop(array: np.ndarray, y0: int, x0: int, size: int) -> np.ndarray:
    """A (size, size, ...) crop, zero-padded at the bottom/right when the image is smaller."""
    part = array[y0:y0 + size, x0:x0 + size]
    pad = [(0, size - part.shape[0]), (0, size - part.shape[1])] + [(0, 0)] * (part.ndim - 2)
    return np.pad(part, pad) if any(p[1] for p in pad) else part


def dihedral(array: np.ndarray, variant: int) -> np.ndarray:
    """Variant 0..7: rotate by 90 * (variant % 4) degrees, then flip left-right if >= 4."""
    out = np.rot90(array, variant % 4, axes=(0, 1))
    return np.ascontiguousarray(out[:, ::-1] if variant >= 4 else out)


def tile_arrays(samples: list, tile: Tile, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The (size, size, 3) uint8 SAM input and the labels of ``tile``."""
    s = samples[tile.sample]
    if scaled_per_tile(s, size):
        rows, cols = slice(tile.y0, tile.y0 + size), slice(tile.x0, tile.x0 + size)
        rgb = crop(SamInput(s.rgb, s.source).tile(rows, cols), 0, 0, size)
    else:
        rgb = crop(s.rgb, tile.y0, tile.x0, size)
    rgb = dihedral(rgb, tile.variant)
    labels = dihedral(crop(s.labels, tile.y0, tile.x0, size), tile.variant)
    return rgb, labels


def fixed_tiles(samples: list, size: int, min_px: int) -> list[Tile]:
    """Grid tiles holding at least one usable object."""
    tiles = []
    for i, s in enumerate(samples):
        for y0, x0 in tile_origins(*s.labels.shape, size):
            lab = crop(s.labels, y0, x0, size)
            if len(prompts.select_objects(lab, 1, None, min_px)):
                tiles.append(Tile(i, y0, x0))
    return tiles
