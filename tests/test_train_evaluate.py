"""The Train dock's "Evaluate on test set...": a fetched model against its base on a training set
the user picks, in a worker, with the verdict report.json uses. No Ray: the fetched model is a
checkpoint registered in the model store as ``runs.fetch`` leaves it."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime

import pytest

from napari_raysam.core.dataset import SampleInput, write_dataset
from napari_raysam.core.dataset.synthetic import make_samples
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.runs.compare import check_test_set, compare_on_set
from napari_raysam.core.sam.evaluate import evaluate_models
from napari_raysam.core.training.report import VERDICT_LABELS, rows_verdict

TIMEOUT = 120_000


def _write_set(path, n: int, val_fraction: float, seed: int = 5):
    samples = make_samples(n, shape=(128, 128), seed=seed)
    return write_dataset(path, [SampleInput(s.image, s.labels, f"s{i}")
                                for i, s in enumerate(samples)], val_fraction=val_fraction)


@pytest.fixture
def held_out(tmp_path):
    """A held-out test set (`dataset create --val-fraction 1`): two images, all val."""
    return _write_set(tmp_path / "test set", 2, 1.0).path


@pytest.fixture
def fetched(tmp_path):
    """A fine-tuned model as a fetch registers it: the shipped tiny_cells weights stand for the
    fine-tuned checkpoint, the untrained tiny SAM for its base model."""
    from napari_raysam.core.model_store import RegisteredModel, register_model
    from napari_raysam.core.sam.models import shipped_weights

    path = tmp_path / "run-eval-1" / "model.pt"
    path.parent.mkdir()
    shutil.copyfile(shipped_weights(), path)
    return register_model(RegisteredModel(
        name="run-eval-1", path=str(path), base_model="tiny", metrics={}, sha256="",
        run="run-eval-1", registered=datetime.now(UTC).isoformat()))


def test_the_split_scored_is_the_held_out_one_or_all_of_a_one_split_set(tmp_path):
    assert check_test_set(_write_set(tmp_path / "mixed", 3, 0.34).path)[1] == "val"
    assert check_test_set(_write_set(tmp_path / "test", 2, 1.0).path)[1] == "val"
    folder, split = check_test_set(_write_set(tmp_path / "all train", 2, 0.0).path)
    assert split == "train" and folder == str(tmp_path / "all train")


def test_bad_test_sets_are_named_before_any_model_loads(tmp_path, held_out):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.tif").write_bytes(b"")
    with pytest.raises(RaysamError, match="is not a napari-raysam training set"):
        compare_on_set("no-such-model", "no-such-model", tmp_path / "plain")
    with pytest.raises(RaysamError, match="does not exist"):
        compare_on_set("no-such-model", "no-such-model", tmp_path / "missing")
    manifest = held_out / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "samples": []}))
    with pytest.raises(RaysamError, match="has no images to evaluate on"):
        compare_on_set("no-such-model", "no-such-model", held_out)


def test_cli_evaluates_a_one_split_set_and_gives_the_shared_verdict(tmp_path, capsys):
    from napari_raysam.cli import main

    all_train = _write_set(tmp_path / "all train", 2, 0.0).path
    assert main(["evaluate", str(all_train), "--model", "tiny", "--model", "tiny_cells",
                 "--split", "auto", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    rows = evaluate_models(["tiny", "tiny_cells"], str(all_train), split="train", rounds=1)
    assert f"{rows[1]['miou_box']:.3f}" in out
    kind, _ = rows_verdict(*rows)
    assert f"verdict (tiny_cells vs tiny, decided by the box mIoU): {VERDICT_LABELS[kind]}" in out


def _dock(make_napari_viewer):
    from napari_raysam._qt.train_widget import TrainWidget

    viewer = make_napari_viewer()
    dock = TrainWidget(viewer)
    viewer.window.add_dock_widget(dock, name="Train")
    return dock


def test_no_fetched_model_no_evaluation(make_napari_viewer, held_out):
    dock = _dock(make_napari_viewer)
    assert not dock.evaluate_button.isEnabled()
    assert dock.evaluate_test_set(str(held_out)) is None
    assert "No fine-tuned model to evaluate yet" in dock.status.text()
    assert "fetch a finished run" in dock.status.text()


def test_bad_folder_is_shown_in_the_status_and_the_button_comes_back(
        qtbot, make_napari_viewer, fetched, tmp_path):
    dock = _dock(make_napari_viewer)
    dock._on_fetched(fetched)
    assert dock.evaluate_button.isEnabled()
    (tmp_path / "plain").mkdir()
    assert dock.evaluate_test_set(str(tmp_path / "plain")) is not None
    assert not dock.evaluate_button.isEnabled()  # while the worker runs
    qtbot.waitUntil(lambda: dock.evaluating is None, timeout=TIMEOUT)
    assert "is not a napari-raysam training set" in dock.status.text()
    assert "dataset create --val-fraction 1" in dock.status.text()
    assert dock.evaluate_button.isEnabled() and dock.evaluation.text() == ""


def test_dialog_cancelled(make_napari_viewer, fetched, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    dock = _dock(make_napari_viewer)
    dock._on_fetched(fetched)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: ""))
    assert dock.evaluate_test_set() is None
    assert dock.status.text() == "Evaluation cancelled." and dock.evaluate_button.isEnabled()


def test_train_dock_evaluates_the_fetched_model_on_a_chosen_test_set(
        qtbot, make_napari_viewer, fetched, held_out, monkeypatch):
    """Opened as napari opens it; the button, a folder from the (patched) dialog, a worker, and
    the figures evaluate_models gives on the same set."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QFileDialog

    viewer = make_napari_viewer()
    _, dock = viewer.window.add_plugin_dock_widget("napari-raysam", "Train")
    asked = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *a, **k: asked.append(a) or str(held_out)))
    dock._on_fetched(fetched)  # as a finished run's fetch ends
    qtbot.mouseClick(dock.evaluate_button, Qt.MouseButton.LeftButton)
    assert asked and not dock.evaluate_button.isEnabled()
    qtbot.waitUntil(lambda: dock.evaluating is None, timeout=TIMEOUT)
    shown = dock.evaluation.text()
    assert shown, dock.status.text()

    base, tuned = evaluate_models(["tiny", "run:run-eval-1"], str(held_out), split="val")
    kind, _ = rows_verdict(base, tuned)
    assert f"Test set {held_out.name}, its val split (held out): 2 image(s), " \
           f"{tuned['objects']} object(s); mIoU tiny -> run:run-eval-1:" in shown
    figures = {label: tuple(map(float, re.search(rf"^{label} (\S+) -> (\S+) ", shown,
                                                 re.MULTILINE).groups()))
               for label in ("point", "box", "corrected")}
    assert figures == {label: (round(base[f"miou_{label}"], 3), round(tuned[f"miou_{label}"], 3))
                       for label in figures}
    assert f"Verdict: {VERDICT_LABELS[kind]} (decided by the box mIoU" in shown
    assert dock.status.text() == f"Evaluated on {held_out} (val): {VERDICT_LABELS[kind]}."
    assert dock.evaluate_button.isEnabled()
