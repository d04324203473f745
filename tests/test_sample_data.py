"""Synthetic fluorescence cells: determinism, shapes, label validity, style differences."""

from __future__ import annotations

import numpy as np
import pytest

from napari_raysam.core.dataset.synthetic import (
    MIN_CELL_PX,
    STYLES,
    CellStyle,
    Sample,
    make_sample,
    make_samples,
)


def _axis_ratios(labels: np.ndarray) -> np.ndarray:
    """Major/minor axis ratio of each label from its second moments."""
    ratios = []
    for i in range(1, int(labels.max()) + 1):
        yy, xx = np.nonzero(labels == i)
        ev = np.linalg.eigvalsh(np.cov(np.stack([yy, xx]).astype(float)))
        ratios.append(np.sqrt(ev[1] / max(ev[0], 1e-6)))
    return np.array(ratios)


def _adjacent_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for a, b in ((labels[:, 1:], labels[:, :-1]), (labels[1:, :], labels[:-1, :])):
        touch = (a != b) & (a > 0) & (b > 0)
        pairs |= {tuple(sorted(p)) for p in zip(a[touch].tolist(), b[touch].tolist(), strict=True)}
    return pairs


def test_deterministic_per_seed():
    a, b, c = make_sample(seed=3), make_sample(seed=3), make_sample(seed=4)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.labels, c.labels)


def test_make_samples_distinct_and_deterministic():
    first = make_samples(3, shape=(128, 128), seed=1)
    again = make_samples(3, shape=(128, 128), seed=1)
    assert len(first) == 3 and all(isinstance(s, Sample) for s in first)
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
    assert not np.array_equal(first[0].labels, first[1].labels)
    assert not np.array_equal(first[0].image, make_samples(1, shape=(128, 128), seed=2)[0].image)


@pytest.mark.parametrize(
    ("channels", "names"),
    [
        (1, ["cells"]),
        (2, ["nuclei", "cytoplasm"]),
        (4, ["microtubules", "protein", "nucleus", "er"]),
    ],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_shapes_and_dtypes(channels, names, dtype):
    s = make_sample(shape=(96, 128), channels=channels, dtype=dtype, seed=1)
    expected = (96, 128) if channels == 1 else (channels, 96, 128)
    assert s.image.shape == expected
    assert s.image.dtype == np.dtype(dtype)
    assert s.labels.shape == (96, 128)
    assert s.labels.dtype in (np.uint16, np.uint32)
    assert s.channel_axis == (None if channels == 1 else 0)
    assert s.channel_names == names
    if np.dtype(dtype).kind == "u":  # uses a good part of the integer range, without overflow
        assert s.image.max() > 0.3 * np.iinfo(dtype).max
    for plane in s.image.reshape(-1, 96, 128):  # every channel carries signal in the cells
        cells = s.labels > 0
        assert plane[cells].astype(float).mean() > plane[~cells].astype(float).mean()


@pytest.mark.parametrize("style", ["round", "elongated", "hpa"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_consecutive_and_big_enough(style, seed):
    labels = make_sample(shape=(256, 256), style=style, seed=seed).labels
    ids = np.unique(labels)
    n = int(labels.max())
    assert n >= 3
    np.testing.assert_array_equal(ids, np.arange(n + 1))
    assert np.bincount(labels.ravel())[1:].min() >= MIN_CELL_PX


def test_default_density_and_explicit_count():
    assert 12 <= make_sample(shape=(256, 256)).labels.max() <= 20  # ~ one cell per 60x60 px
    assert make_sample(shape=(256, 256), n_cells=5, seed=2).labels.max() == 5


def test_dense_cells_touch():
    s = make_sample(shape=(256, 256), n_cells=40, seed=0)
    assert len(_adjacent_pairs(s.labels)) >= 5


def test_elongated_more_elongated_and_dimmer():
    rounds = make_samples(3, style="round", dtype=np.float32, seed=5)
    longs = make_samples(3, style="elongated", dtype=np.float32, seed=5)
    r_ratio = np.mean(np.concatenate([_axis_ratios(s.labels) for s in rounds]))
    e_ratio = np.mean(np.concatenate([_axis_ratios(s.labels) for s in longs]))
    assert e_ratio > r_ratio + 0.8, (r_ratio, e_ratio)
    r_int = np.mean([s.image[s.labels > 0].mean() for s in rounds])
    e_int = np.mean([s.image[s.labels > 0].mean() for s in longs])
    assert e_int < 0.8 * r_int, (r_int, e_int)


def test_custom_style_and_bad_channels():
    style = CellStyle("tiny", radius=(5.0, 7.0), area_per_cell=400.0)
    s = make_sample(shape=(128, 128), style=style, seed=0)
    assert s.labels.max() > 20
    assert set(STYLES) >= {"round", "elongated"}
    with pytest.raises(ValueError, match="channels"):
        make_sample(channels=5)


def test_napari_sample_entries():
    from napari_raysam.napari_entry import sample_cells, sample_hpa

    (img, img_kw, img_type), (lab, lab_kw, lab_type) = sample_cells()
    assert (img_type, lab_type) == ("image", "labels")
    assert img.shape == (4, 256, 256) and lab.shape == (4, 256, 256)  # a stack of planes
    assert img_kw["name"] == "cells" and lab_kw["name"] == "cells ground truth"

    (img, img_kw, img_type), (lab, lab_kw, lab_type) = sample_hpa()
    assert (img_type, lab_type) == ("image", "labels")
    assert img.shape == (4, 512, 512) and lab.shape == (512, 512)
    assert img_kw["name"] == "hpa cells" and lab_kw["name"] == "hpa cells ground truth"
    assert img_kw["metadata"]["raysam_channel_axis"] == 0
    assert img_kw["metadata"]["channel_names"] == ["microtubules", "protein", "nucleus", "er"]


def test_builtin_sample_is_a_stack_of_planes_with_ground_truth():
    from napari_raysam.napari_entry import sample_cells

    (image, image_kw, image_kind), (labels, labels_kw, labels_kind) = sample_cells()
    assert (image_kind, labels_kind) == ("image", "labels")
    assert image_kw["name"] == "cells" and labels_kw["name"] == "cells ground truth"
    assert image.shape == labels.shape == (4, 256, 256)  # the Export dock pairs same shapes
    assert image.dtype == np.uint16 and labels.dtype == np.uint16
    for k in range(4):  # independent planes, each with touching cells
        assert 12 <= labels[k].max() == len(np.unique(labels[k])) - 1
        assert len(_adjacent_pairs(labels[k])) >= 3
        assert k == 0 or not np.array_equal(image[k], image[0])
    again = sample_cells()
    np.testing.assert_array_equal(again[0][0], image)


def test_builtin_sample_unseen_by_the_shipped_model():
    """tiny_cells trains on make_samples(..., seed=s) for its settings' seed and seed + 1."""
    from napari_raysam.core.dataset.synthetic import SAMPLE_SEED
    from napari_raysam.core.sam.models import load_model

    settings = load_model("tiny_cells", device="cpu").lineage["settings"]
    sample_seeds = set(np.random.SeedSequence(SAMPLE_SEED).generate_state(4).tolist())
    for seed in (settings["seed"], settings["seed"] + 1):
        n = max(settings["images"], settings.get("dense", 0))
        assert not sample_seeds & set(np.random.SeedSequence(seed).generate_state(n).tolist())

