"""Bad input is refused with a clear RaysamError before any Ray worker starts (no Ray here:
each of these fails before ``ray.init``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from napari_raysam.core.dataset import SampleInput, write_dataset
from napari_raysam.core.dataset.synthetic import make_samples
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.training.config import TrainConfig
from napari_raysam.core.training.runner import RUN_FILE, resolve_run, run_training


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch):
    """Fail loudly if a check comes after starting Ray."""
    import napari_raysam.core.training.runner as runner

    def boom(*a, **k):
        raise AssertionError("Ray was started before the input was checked")

    monkeypatch.setattr(runner, "ensure_ray", boom)


def _ds(path: Path, n: int = 3, seed: int = 0) -> Path:
    samples = make_samples(n, shape=(64, 64), seed=seed)
    write_dataset(path, [SampleInput(s.image, s.labels, f"s{i}") for i, s in enumerate(samples)],
                  seed=seed)
    return path


def _run(tmp_path, **kw):
    kw.setdefault("storage", str(tmp_path / "runs"))
    return run_training(TrainConfig(**kw))


def test_missing_or_invalid_dataset(tmp_path):
    with pytest.raises(RaysamError, match="cannot be used"):
        _run(tmp_path, dataset=str(tmp_path / "nothing"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(RaysamError, match="not valid JSON"):
        _run(tmp_path, dataset=str(bad))


def test_damaged_dataset_file(tmp_path):
    ds = _ds(tmp_path / "ds")
    next((ds / "images").iterdir()).write_bytes(b"garbage")
    with pytest.raises(RaysamError, match="cannot be used"):
        _run(tmp_path, dataset=str(ds))


def test_unknown_model_spec(tmp_path):
    ds = _ds(tmp_path / "ds")
    with pytest.raises(RaysamError, match="Unknown model 'vit_q_nonsense'"):
        _run(tmp_path, dataset=str(ds), model="vit_q_nonsense")
    with pytest.raises(RaysamError, match="not found"):
        _run(tmp_path, dataset=str(ds), model=str(tmp_path / "missing.pt"))


def test_lora_without_peft(tmp_path, monkeypatch):
    ds = _ds(tmp_path / "ds")
    monkeypatch.setitem(sys.modules, "micro_sam.models.peft_sam", None)  # import fails
    with pytest.raises(RaysamError, match="PEFT.*--mode decoder"):
        _run(tmp_path, dataset=str(ds), mode="lora")


def test_storage_not_writable(tmp_path):
    ds = _ds(tmp_path / "ds")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(RaysamError, match="not writable"):
        _run(tmp_path, dataset=str(ds), storage=str(blocker / "runs"))


def test_bad_config_values(tmp_path):
    with pytest.raises(RaysamError, match="epochs"):
        _run(tmp_path, dataset=str(tmp_path), epochs=0)


def test_resume_name_checks_the_dataset(tmp_path):
    ds = _ds(tmp_path / "ds")
    other = _ds(tmp_path / "other", seed=9)
    from napari_raysam.core.dataset import open_dataset

    storage = tmp_path / "runs"
    run = storage / "myrun"
    run.mkdir(parents=True)
    (run / RUN_FILE).write_text(json.dumps(
        {"dataset_content_hash": open_dataset(ds).content_hash}))
    with pytest.raises(RaysamError, match="different training set"):
        _run(tmp_path, dataset=str(other), name="myrun")
    from napari_raysam.core.storage import Storage

    runs = Storage.open(str(storage))
    assert resolve_run(runs, "myrun", open_dataset(ds).content_hash) == ("myrun", True)
    name, resumed = resolve_run(runs, None, "x")
    assert not resumed and name != "myrun"
    (storage / "stranger").mkdir()
    with pytest.raises(RaysamError, match="not a napari-raysam run"):
        resolve_run(runs, "stranger", "x")
    with pytest.raises(RaysamError, match="Refusing the run name"):
        resolve_run(runs, "../escape", "x")


def test_cli_reports_errors_with_exit_2(tmp_path, capsys):
    from napari_raysam.cli import main

    code = main(["train", str(tmp_path / "none"), "--storage", str(tmp_path / "runs")])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: ")
