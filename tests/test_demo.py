"""The shipped offline model ``tiny_cells`` and ``napari-raysam demo`` (the README's main job)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from napari_raysam.core.dataset import SampleInput, write_dataset
from napari_raysam.core.dataset.synthetic import make_samples

ROOT = Path(__file__).resolve().parents[1]


def _round_set(path: Path) -> str:
    """Fresh round cells (seeds the checkpoint script never used), half held out."""
    samples = make_samples(4, style="round", seed=4242)
    write_dataset(path, [SampleInput(s.image, s.labels, f"r{i}") for i, s in enumerate(samples)],
                  val_fraction=0.5, seed=3)
    return str(path)


def test_tiny_cells_loads_offline_and_beats_random_tiny(tmp_path):
    from napari_raysam.core.sam.evaluate import evaluate_model
    from napari_raysam.core.sam.models import load_model

    model = load_model("tiny_cells", device="cpu")
    assert model.spec == "tiny_cells" and model.model_type == "tiny"
    assert model.lineage["style"] == "round" and model.lineage["seed"] == 0
    assert model.lineage["script"] == "scripts/make_tiny_checkpoint.py"
    dataset = _round_set(tmp_path / "round")
    shipped = evaluate_model(model, dataset, rounds=1)
    random = evaluate_model(load_model("tiny", device="cpu"), dataset, rounds=1)
    assert shipped["objects"] >= 20
    assert shipped["miou_point"] > random["miou_point"] + 0.25, (shipped, random)
    assert shipped["miou_box"] > random["miou_box"] + 0.25, (shipped, random)


def test_missing_shipped_weights_say_how_to_make_them():
    from napari_raysam.core.sam.models import ModelError, shipped_weights

    with pytest.raises(ModelError, match="make_tiny_checkpoint.py"):
        shipped_weights("not_shipped")


def test_sparse_annotations_keep_a_few_whole_cells():
    from napari_raysam.demo import sparse_labels

    labels = make_samples(1, style="elongated", seed=2)[0].labels
    sparse = sparse_labels(labels, 5, np.random.default_rng(0))
    kept = np.unique(sparse[sparse > 0])
    assert len(kept) == 5
    for i in kept:  # whole objects, untouched ids
        assert np.array_equal(sparse == i, labels == i)


def test_readme_first_command_runs_the_demo():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    assert blocks[0].strip() == "bash scripts/run.sh"
    assert blocks[1].strip() == "bash scripts/test.sh"
    run = (ROOT / "scripts" / "run.sh").read_text()
    assert "bash scripts/setup.sh" in run and '"$PYTHON" -m napari_raysam.cli demo' in run


@pytest.mark.ray
def test_demo_small_through_the_cli(tmp_path):
    from napari_raysam.cli import main
    from napari_raysam.demo import DemoOptions

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["demo", "--small", "--out", str(tmp_path / "demo")])
    text = out.getvalue()
    assert code == 0, text
    assert "napari-raysam demo" in text.splitlines()[0] and "About" in text
    paths = {k: Path(v.strip()) for k, v in re.findall(r"^(checkpoint|report|curves):(.*)$",
                                                          text, re.M)}
    assert set(paths) == {"checkpoint", "report", "curves"}
    assert all(p.is_file() for p in paths.values()), paths
    report = json.loads(paths["report"].read_text())
    assert report["after"]["val_miou_point"] > report["before"]["val_miou_point"], report
    assert report["base_model"] == "tiny_cells"  # resolved in the job from the shipped package
    from napari_raysam.core.model_store import list_registered_models

    (registered,) = list_registered_models()  # fetched through the Jobs API and registered
    assert Path(registered.path) == paths["checkpoint"]
    ts = json.loads((tmp_path / "demo" / "training-set" / "manifest.json").read_text())
    assert len(ts["samples"]) == DemoOptions.small().images


def test_gui_opens_sample_and_every_dock(qtbot):
    from npe2 import PluginManifest

    from napari_raysam.demo import DemoOptions, open_gui

    viewer = open_gui(DemoOptions(), block=False)
    try:
        docks = set(viewer.window.dock_widgets)
        listed = [w.display_name for w in PluginManifest.from_distribution(
            "napari-raysam").contributions.widgets]
        assert {"Segment", "Export"} <= set(listed)
        for name in listed:
            assert any(name in d for d in docks), (name, docks)
        assert viewer.layers.selection.active.name == "demo cells"
    finally:
        viewer.close()
