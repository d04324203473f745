"""Training data on a worker: the tiles of each epoch, steps per epoch, and the embedding
cache of decoder mode. (Sharding: ``core.dataset.shards``; tiles: ``core.sam.tiles``.)

Every rank runs the same number of steps per epoch (DDP synchronises every backward), cycling
through its shard.

Augmentation: the 8 dihedral variants (90-degree rotations x flip). In decoder mode tiles are a
fixed grid and each epoch picks one variant per tile from seed + epoch + tile, so the encoder
output of every (tile, variant) can be cached: in memory and under the run's storage folder.
In lora/full mode each step takes a random crop and a random variant.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from napari_raysam.core.dataset.shards import LoadedSample
from napari_raysam.core.images import scaled_per_tile
from napari_raysam.core.sam import prompts
from napari_raysam.core.sam.tiles import Tile, crop, tile_arrays


def epoch_tiles(samples: list[LoadedSample], base: list[Tile], size: int, n: int, mode: str,
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


#: micro-sam's rule of thumb: an epoch draws at least 100 training samples however small the set
#: (``micro_sam.training.training.default_sam_dataset``: ``n_samples = max(len(loader), 100 if
#: is_train else 5)``; micro-sam 1.8). Our sample is one image tile of one step on one worker.
MIN_SAMPLES_PER_EPOCH = 100
#: A run sized from the data sees about this many samples (20 epochs of a small set's 100),
#: in AUTO_EPOCHS[0]..AUTO_EPOCHS[1] epochs (a large set: 5 passes over it).
AUTO_SAMPLES = 2000
AUTO_EPOCHS = (5, 20)


def plan_run(n_tiles_total: int, world: int, images_per_step: int, epochs: int | None,
             fixed: int | None = None) -> tuple[int, int]:
    """(steps per epoch, epochs), the same on every rank.

    ``epochs`` given: one pass over the tiles per epoch (or ``fixed`` steps). ``epochs`` None
    (the default): sized from the data, each epoch at least MIN_SAMPLES_PER_EPOCH samples (one
    pass when the set is larger), and ceil(AUTO_SAMPLES / samples per epoch) epochs within
    AUTO_EPOCHS."""
    steps = steps_per_epoch(n_tiles_total, world, images_per_step, fixed)
    if epochs is not None:
        return steps, int(epochs)
    per_step = world * images_per_step
    if not fixed:
        steps = max(steps, math.ceil(MIN_SAMPLES_PER_EPOCH / per_step))
    lo, hi = AUTO_EPOCHS
    return steps, min(hi, max(lo, math.ceil(AUTO_SAMPLES / (steps * per_step))))


class TileEmbeddingCache:
    """Encoder outputs keyed by sample hash + tile + variant, for one encoder fingerprint.

    Memory first, then ``folder`` (e.g. ``<run>/embeddings/<fingerprint>``), else computed by
    ``compute(rgb)`` and written there atomically. Only used while the encoder is frozen.
    """

    def __init__(self, folder: str | Path | None, compute):
        self.folder = Path(folder) if folder else None
        self.compute = compute
        self.memory: dict[str, object] = {}
        self.hits = self.misses = 0

    def get(self, samples: list[LoadedSample], tile: Tile, size: int):
        import torch

        s = samples[tile.sample]
        key = f"{s.record.sample_hash[:20]}_{tile.y0}_{tile.x0}_{size}_{tile.variant}"
        if scaled_per_tile(s, size):
            key += "_own-scale"  # entries from before tiles were scaled on their own differ
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
