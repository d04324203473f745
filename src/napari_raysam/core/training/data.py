"""Training data on a worker: tiles of the model's input size, augmentation, sharding, and
the embedding cache of decoder mode.

Sharding: each worker keeps ``samples[rank::world]`` of a split (records sorted by id, so all
ranks agree without communication) and reads only those files. Every rank runs the same number
of steps per epoch (DDP synchronises every backward), cycling through its shard.

Augmentation: the 8 dihedral variants (90-degree rotations x flip). In decoder mode tiles are a
fixed grid and each epoch picks one variant per tile from seed + epoch + tile, so the encoder
output of every (tile, variant) can be cached: in memory and under the run's storage folder.
In lora/full mode each step takes a random crop and a random variant.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dataset import SampleRecord, open_dataset
from . import prompts


@dataclass
class Sample:
    """One training/validation image in memory: SAM RGB (to_sam_rgb policy) + instance labels."""

    rgb: np.ndarray
    labels: np.ndarray
    record: SampleRecord


@dataclass(frozen=True)
class Tile:
    sample: int  # index into the worker's samples
    y0: int
    x0: int
    variant: int = 0  # dihedral variant 0..7


def load_shard(dataset: str, split: str, rank: int = 0, world: int = 1,
               at_least_one: bool = False) -> list[Sample]:
    """This rank's share of a split, read and normalised exactly as inference does.

    ``at_least_one`` (training): with fewer images than workers a rank borrows one image
    (as a distributed sampler pads), so every rank has a step to take.
    """
    ts = open_dataset(dataset)
    ordered = sorted(ts.split(split), key=lambda r: r.id)
    records = ordered[rank::world]
    if at_least_one and not records and ordered:
        records = [ordered[rank % len(ordered)]]
    out = []
    for record in records:
        rgb, labels = ts.load(record, normalise=True)
        out.append(Sample(rgb, np.asarray(labels), record))
    return out


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


def tile_arrays(samples: list[Sample], tile: Tile, size: int) -> tuple[np.ndarray, np.ndarray]:
    s = samples[tile.sample]
    rgb = dihedral(crop(s.rgb, tile.y0, tile.x0, size), tile.variant)
    labels = dihedral(crop(s.labels, tile.y0, tile.x0, size), tile.variant)
    return rgb, labels


def fixed_tiles(samples: list[Sample], size: int, min_px: int) -> list[Tile]:
    """Grid tiles holding at least one usable object."""
    tiles = []
    for i, s in enumerate(samples):
        for y0, x0 in tile_origins(*s.labels.shape, size):
            lab = crop(s.labels, y0, x0, size)
            if len(prompts.select_objects(lab, 1, None, min_px)):
                tiles.append(Tile(i, y0, x0))
    return tiles


def epoch_tiles(samples: list[Sample], base: list[Tile], size: int, n: int, mode: str,
                seed: int, epoch: int, rank: int, min_px: int) -> list[Tile]:
    """The ``n`` tiles this rank trains on in ``epoch`` (cycling through its shard)."""
    rng = np.random.default_rng([seed, epoch, rank])
    order = [base[i] for i in rng.permutation(len(base))]
    order = (order * (n // max(len(order), 1) + 1))[:n]
    out = []
    for tile in order:
        if mode == "decoder":
            v = int(prompts.shared_unit(seed, epoch, tile) * 8)
            out.append(Tile(tile.sample, tile.y0, tile.x0, v))
            continue
        h, w = samples[tile.sample].labels.shape
        chosen = tile
        for _ in range(10):  # a random crop with at least one object, else the grid tile
            cand = Tile(tile.sample, int(rng.integers(0, max(h - size, 0) + 1)),
                        int(rng.integers(0, max(w - size, 0) + 1)))
            lab = crop(samples[cand.sample].labels, cand.y0, cand.x0, size)
            if len(prompts.select_objects(lab, 1, None, min_px)):
                chosen = cand
                break
        out.append(Tile(chosen.sample, chosen.y0, chosen.x0, int(rng.integers(8))))
    return out


def steps_per_epoch(n_tiles_total: int, world: int, images_per_step: int,
                    fixed: int | None = None) -> int:
    """Same on every rank: one pass over all tiles split across ranks (or ``fixed``)."""
    if fixed:
        return int(fixed)
    return max(1, math.ceil(n_tiles_total / (world * images_per_step)))


class EmbeddingCache:
    """Encoder outputs keyed by sample hash + tile + variant, for one encoder fingerprint.

    Memory first, then ``folder`` (e.g. ``<run>/embeddings/<fingerprint>``), else computed by
    ``compute(rgb)`` and written there atomically. Only used while the encoder is frozen.
    """

    def __init__(self, folder: str | Path | None, compute):
        self.folder = Path(folder) if folder else None
        self.compute = compute
        self.memory: dict[str, object] = {}
        self.hits = self.misses = 0

    def get(self, samples: list[Sample], tile: Tile, size: int):
        import torch

        s = samples[tile.sample]
        key = f"{s.record.sample_hash[:20]}_{tile.y0}_{tile.x0}_{size}_{tile.variant}"
        if key in self.memory:
            self.hits += 1
            return self.memory[key]
        path = self.folder / f"{key}.pt" if self.folder else None
        if path is not None and path.is_file():
            emb = torch.load(path, weights_only=True)
        else:
            self.misses += 1
            rgb, _ = tile_arrays(samples, tile, size)
            emb = self.compute(torch.from_numpy(rgb)[None])[0].detach().cpu()
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}")
                torch.save(emb, tmp)
                os.replace(tmp, path)
        self.memory[key] = emb
        return emb
