"""A split of a training set in memory, sharded across workers: ``samples[rank::world]``.

Records are sorted by id, so all ranks agree without communication; each worker reads only
its own files. Images are normalised exactly as inference does (the model's normalisation; under
min-max a tile of a large image is scaled on its own, ``core.sam.tiles``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_raysam.core.dataset.format import SampleRecord, open_dataset
from napari_raysam.core.images import ImagePolicy, scaled_per_tile, to_sam_input


@dataclass
class LoadedSample:
    """One training/validation image in memory: SAM RGB (to_sam_rgb policy) + instance labels;
    ``source``: the chosen channels its tiles are scaled from (min-max), else None."""

    rgb: np.ndarray
    labels: np.ndarray
    record: SampleRecord
    source: np.ndarray | None = None


def load_shard(dataset: str, split: str, rank: int = 0, world: int = 1,
               at_least_one: bool = False, normalisation: dict | None = None,
               tile_size: int | None = None) -> list[LoadedSample]:
    """This rank's share of a split, read and normalised exactly as inference does
    (``normalisation``: the model's, :attr:`..sam.models.LoadedModel.normalisation`).
    ``tile_size``: the model's input; an image that fits one tile keeps no ``source``.

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
        image, labels = ts.load(record)
        policy = ImagePolicy(channel_axis=record.channel_axis).using(normalisation)
        sam_input = to_sam_input(image, policy)
        sample = LoadedSample(sam_input.rgb, np.asarray(labels), record, sam_input.source)
        if tile_size is not None and not scaled_per_tile(sample, tile_size):
            sample.source = None  # one tile: scaled as the whole image; keep no raw copy
        out.append(sample)
    return out
