"""A split of a training set in memory, sharded across workers: ``samples[rank::world]``.

Records are sorted by id, so all ranks agree without communication; each worker reads only
its own files. Images are normalised exactly as inference does (the model's normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_raysam.core.dataset.format import SampleRecord, open_dataset


@dataclass
class LoadedSample:
    """One training/validation image in memory: SAM RGB (to_sam_rgb policy) + instance labels."""

    rgb: np.ndarray
    labels: np.ndarray
    record: SampleRecord


def load_shard(dataset: str, split: str, rank: int = 0, world: int = 1,
               at_least_one: bool = False, normalisation: dict | None = None
               ) -> list[LoadedSample]:
    """This rank's share of a split, read and normalised exactly as inference does
    (``normalisation``: the model's, :attr:`..sam.models.LoadedModel.normalisation`).

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
        rgb, labels = ts.load(record, normalise=True, normalisation=normalisation)
        out.append(LoadedSample(rgb, np.asarray(labels), record))
    return out
