"""Entry points named in napari.yaml (sample data, readers). Heavy imports stay inside functions."""

from __future__ import annotations

from typing import Any

LayerData = tuple[Any, dict, str]


def _with_ground_truth(sample, name: str, image_meta: dict | None = None) -> list[LayerData]:
    image_kwargs: dict = {"name": name}
    if image_meta:
        image_kwargs["metadata"] = image_meta
    return [
        (sample.image, image_kwargs, "image"),
        (sample.labels, {"name": f"{name} ground truth"}, "labels"),
    ]


def sample_cells() -> list[LayerData]:
    """napari sample: a stack of 4 single-channel 256x256 planes of round cells (4, 256, 256)
    with its ground truth (same shape, so the Export dock pairs them plane by plane)."""
    from napari_raysam.core.dataset.synthetic import builtin_sample

    return _with_ground_truth(builtin_sample(), "cells")


def sample_hpa() -> list[LayerData]:
    """napari sample: a (4, 512, 512) HPA-like composite (channels first) with its ground truth."""
    from napari_raysam.core.dataset.synthetic import make_sample

    sample = make_sample((512, 512), style="hpa", channels=4, seed=0)
    meta = {"raysam_channel_axis": 0, "channel_names": list(sample.channel_names)}
    return _with_ground_truth(sample, "hpa cells", meta)


def _set_folder(path) -> str | None:
    """The training-set folder named by ``path`` (the folder or its manifest.json), else None."""
    from pathlib import Path

    from napari_raysam.core.dataset.format import MANIFEST

    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, str | Path):
        return None
    path = Path(path)
    if path.name == MANIFEST and path.is_file():
        path = path.parent
    return str(path) if path.is_dir() else None


def get_training_set_reader(path: str | list[str]):
    """napari reader hook: a training set's manifest.json (or its folder, for callers that pass
    one) gets a reader; anything else None."""
    from napari_raysam.core.dataset.format import is_training_set

    folder = _set_folder(path)
    return _read_training_set if folder is not None and is_training_set(folder) else None


def _read_training_set(path: str | list[str]) -> list[LayerData]:
    """Each sample as an image layer (named by sample id) and its labels; only the first shown.

    Multi-channel images become one image layer with channels first (metadata
    ``raysam_channel_axis`` = 0 and ``channel_names``); RGB(A) images are shown as RGB.
    """
    import numpy as np

    from napari_raysam.core.dataset import MANIFEST, DatasetError, open_dataset

    folder = _set_folder(path)
    if folder is None:
        raise DatasetError(f"{path} is not a napari-raysam training set or its {MANIFEST}.")
    ts = open_dataset(folder)
    layers: list[LayerData] = []
    for i, (image, labels, record) in enumerate(ts.iter_samples(normalise=False)):
        meta = {"raysam_sample": record.to_json(), "raysam_training_set": str(ts.path),
                "split": record.split, "source": record.source}
        kwargs: dict = {"name": record.id, "visible": i == 0}
        if record.channel_axis is not None:
            image = np.moveaxis(image, record.channel_axis, 0)
            meta.update(raysam_channel_axis=0, channel_names=list(record.channel_names))
            kwargs["rgb"] = False
        else:
            kwargs["rgb"] = image.ndim == 3
        kwargs["metadata"] = meta
        layers.append((image, kwargs, "image"))
        labels_meta = {"raysam_sample_id": record.id, "raysam_training_set": str(ts.path)}
        layers.append((labels, {"name": f"{record.id} labels", "visible": i == 0,
                                "metadata": labels_meta}, "labels"))
    return layers
