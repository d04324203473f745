"""core.evaluate: point / box / corrected mIoU on the val split, and the CLI table."""

from __future__ import annotations

import pytest

from napari_raysam.core.dataset import SampleInput, write_dataset
from napari_raysam.core.dataset.synthetic import make_samples
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.sam.evaluate import evaluate_model, evaluate_models, format_table


@pytest.fixture
def dataset(tmp_path):
    samples = make_samples(3, shape=(128, 128), seed=4)
    write_dataset(tmp_path / "ds", [SampleInput(s.image, s.labels, f"s{i}")
                                    for i, s in enumerate(samples)], val_fraction=0.34)
    return tmp_path / "ds"


def test_evaluate_tiny(dataset, tiny_model):
    row = evaluate_model(tiny_model, str(dataset), rounds=2)
    assert row["objects"] > 0 and row["images"] == 1
    for key in ("miou_point", "miou_box", "miou_corrected", "sa50_point"):
        assert 0.0 <= row[key] <= 1.0
    again = evaluate_model(tiny_model, str(dataset), rounds=2)
    assert again["miou_corrected"] == row["miou_corrected"]  # seeded corrections


def test_evaluate_needs_val(tmp_path):
    s = make_samples(1, shape=(64, 64))[0]
    write_dataset(tmp_path / "one", [SampleInput(s.image, s.labels, "only")])
    with pytest.raises(RaysamError, match="no validation split"):
        evaluate_model("tiny", str(tmp_path / "one"))


def test_table_and_cli(dataset, capsys):
    rows = evaluate_models(["tiny", "tiny:1"], str(dataset), rounds=1)
    table = format_table(rows)
    assert "tiny:1" in table and "corrected" in table
    assert "SA50(point) = the fraction of objects" in table  # every column explained
    from napari_raysam.cli import main

    assert main(["evaluate", str(dataset), "--model", "tiny", "--rounds", "1"]) == 0
    assert "point" in capsys.readouterr().out


def test_evaluation_scales_pixels_as_the_model_was_trained(tmp_path):
    """Hot pixels in 16-bit camera images: tiny_cells (trained on percentile-scaled cells,
    which its checkpoint implies) segments them; forced to micro-sam's min-max it cannot, as
    the cells shrink to a few grey levels. The training set's shards follow the model."""
    import dataclasses

    import numpy as np

    from napari_raysam.core.dataset.shards import load_shard
    from napari_raysam.core.images import ImagePolicy, to_sam_rgb
    from napari_raysam.core.sam.models import load_model

    rng = np.random.default_rng(0)
    inputs = []
    for i, s in enumerate(make_samples(2, (256, 256), seed=11, dtype=np.float32)):
        counts = np.rint(100 + np.clip(s.image, 0, None) * 1200).astype(np.uint16)
        counts.flat[rng.choice(counts.size, 3, replace=False)] = 65535
        inputs.append(SampleInput(counts, s.labels, f"hot{i}"))
    write_dataset(tmp_path / "hot", inputs, val_fraction=0.5)
    shipped = load_model("tiny_cells", device="cpu")
    minmax = dataclasses.replace(shipped, normalisation=ImagePolicy().normalisation())
    own = evaluate_model(shipped, str(tmp_path / "hot"), rounds=0)
    forced = evaluate_model(minmax, str(tmp_path / "hot"), rounds=0)
    assert own["miou_box"] > 0.7 and forced["miou_box"] < 0.3, (own, forced)
    [sample] = load_shard(str(tmp_path / "hot"), "val", normalisation=shipped.normalisation)
    raw = next(i.image for i in inputs if i.source == sample.record.source)
    np.testing.assert_array_equal(sample.rgb, to_sam_rgb(raw, shipped.image_policy()))
