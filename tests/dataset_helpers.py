"""Small synthetic training-set inputs shared by the dataset tests."""

from __future__ import annotations

import json

import numpy as np

from napari_raysam.core.dataset import SampleInput


def cells(seed: int, shape=(40, 48), n=3, channels: int | None = None, ids=None):
    """A few bright discs on a noisy background and their instance labels."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 10, shape).astype(np.float32)
    labels = np.zeros(shape, np.int64)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for k in range(n):
        cy, cx = rng.integers(6, shape[0] - 6), rng.integers(6, shape[1] - 6)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 25
        labels[disc] = ids[k] if ids else 3 * k + 2  # non-consecutive ids
        image[disc] += 80
    if channels:
        image = np.stack([image * (c + 1) for c in range(channels)]).astype(np.uint16)
    return image, labels


def inputs(n: int, start: int = 0, **kw) -> list[SampleInput]:
    return [SampleInput(*cells(start + i, **kw), source=f"layer {start + i}") for i in range(n)]


def tree(path) -> dict:
    """Every file under path with its bytes, for "nothing changed" checks."""
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def edit_manifest(dest, change) -> None:
    """Apply ``change`` to the dict in ``dest/manifest.json`` (a hand edit of the set)."""
    path = dest / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
