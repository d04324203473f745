"""Sharing a fine-tuned model as a bioimage.io package: a vit_b-architecture checkpoint with
seeded random weights, registered like a fetched run, exported through the CLI with micro-sam's
exporter and tested by bioimage.io's own checks (offline); tiny models and bad output paths
are refused before any work, leaving nothing behind."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from napari_raysam import cli

LINEAGE = {
    "base_model": "vit_b_lm", "mode": "decoder", "run": "cells-vitb-1",
    "dataset": "/data/sets/cells", "dataset_content_hash": "ab12" * 16,
    "config": {"epochs": 3, "lr": 1e-4, "objects_per_image": 8},
    "metrics": [{"epoch": 1, "loss": 0.9, "val_miou_box": 0.61},
                {"epoch": 2, "loss": 0.7, "val_miou_box": 0.74}],
    "baseline": {"val_miou_box": 0.52, "val_objects": 40},
    "versions": {"torch": "2.14.1", "micro-sam": "1.8.14"}, "best_epoch": 2,
}


@pytest.fixture(scope="module")
def vit_b_checkpoint(tmp_path_factory):
    """A vit_b SAM with seeded random weights in our checkpoint format, with a lineage."""
    import torch

    from napari_raysam.core.sam.architectures import build_standard_sam
    from napari_raysam.core.sam.models import save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("vitb") / "model.pt",
                           build_standard_sam("vit_b"), "vit_b", lineage=LINEAGE)


def _register(name: str, path: Path, base: str = "vit_b_lm") -> None:
    from napari_raysam.core.model_store import RegisteredModel, register_model

    register_model(RegisteredModel(name=name, path=str(path), base_model=base, metrics={},
                                   sha256="", run=name,
                                   registered=datetime.now(UTC).isoformat()))


@pytest.mark.timeout(1800)  # ~110 s of CPU for vit_b (see benchmarks/bioimageio_export.py)
def test_cli_exports_a_registered_vit_b_model_that_bioimageio_validates(
        vit_b_checkpoint, tmp_path, capsys):
    import torch
    from bioimageio.spec import load_description

    _register("cells-vitb-1", vit_b_checkpoint)
    out_dir = tmp_path / "share"
    out_dir.mkdir()
    out = out_dir / "cells.zip"

    assert cli.main(["models", "export", "cells-vitb-1", "--out", str(out),
                     "--author", "A. Microscopist"]) == 0
    printed = capsys.readouterr().out
    assert "bioimage.io test: passed" in printed and "vit_b" in printed
    assert sorted(p.name for p in out_dir.iterdir()) == ["cells.zip"]  # no partial left

    descr = load_description(out, perform_io_checks=True)  # read back on its own
    assert descr.validation_summary.status == "valid-format", descr.validation_summary
    assert descr.type == "model" and "napari-raysam" in descr.name
    assert "napari-raysam" in descr.tags and [a.name for a in descr.authors] == \
        ["A. Microscopist"]
    assert LINEAGE["dataset_content_hash"][:16] in descr.description
    assert "0.520 -> 0.740" in descr.description
    with zipfile.ZipFile(out) as package:
        doc = package.read("documentation.md").decode()
        weights = [n for n in package.namelist() if n.endswith(".pt")]
        with package.open(weights[0]) as fh:
            exported = torch.load(fh, map_location="cpu", weights_only=True)
    machine = json.loads(doc.split("```json", 1)[1].split("```", 1)[0])
    assert machine == json.loads(json.dumps(LINEAGE))  # the whole lineage travels
    assert "| training-set content hash (sha256) | " + LINEAGE["dataset_content_hash"] in doc
    assert "| val_miou_box | 0.52 | 0.74 |" in doc
    assert "| pixel scaling in training | min-max (micro-sam's) |" in doc
    assert "Note:" not in doc and "Note:" not in printed  # micro-sam's pixels: nothing to warn
    ours = torch.load(vit_b_checkpoint, map_location="cpu", weights_only=True)["model_state"]
    key = "image_encoder.blocks.0.attn.qkv.weight"
    assert torch.equal(exported[key], ours[key])  # our weights, not some other vit_b


def test_a_model_trained_on_other_pixels_than_micro_sams_is_flagged(tmp_path):
    """micro-sam's tools scale every image min-max: a package of a percentile-trained model
    says so in its documentation (and the export says it before the work starts)."""
    from napari_raysam.core.images import LEGACY, ImagePolicy
    from napari_raysam.core.sam.export import ExportSource, documentation, scaling_note
    from napari_raysam.core.sam.models import OUR_KEY, checkpoint_normalisation

    percentile = LEGACY.normalisation()
    source = ExportSource("run:x", "x", tmp_path / "x.pt", "vit_b", LINEAGE, False, percentile)
    doc = documentation(source)
    assert "| pixel scaling in training | percentile-scaled (1-99.8th) |" in doc
    assert scaling_note(percentile) in doc and "--normalisation minmax" in doc
    assert scaling_note(ImagePolicy().normalisation()) is None
    # which scaling a checkpoint file stands for: ours records it (older ones: percentile);
    # a plain micro-sam/SAM checkpoint is micro-sam's min-max
    assert checkpoint_normalisation({"model_state": {}}, "m.pt")["scaling"] == "minmax"
    assert checkpoint_normalisation({OUR_KEY: {"format": 1}}, "m.pt") == percentile
    recorded = {OUR_KEY: {"normalisation": {"scaling": "minmax", "policy_version": 2}}}
    assert checkpoint_normalisation(recorded, "m.pt")["scaling"] == "minmax"


def test_a_package_that_fails_bioimageio_is_reported(tmp_path):
    """validate_package reads bioimage.io's verdict: a package missing a file it lists fails."""
    from napari_raysam.core.errors import RaysamError
    from napari_raysam.core.sam.export import validate_package

    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as package:
        package.writestr("rdf.yaml", "type: model\nformat_version: 0.5.4\nname: broken model\n"
                                     "documentation: missing.md\n")
    with pytest.raises(RaysamError, match="did not pass bioimage.io's test"):
        validate_package(broken)


def test_tiny_models_are_not_exportable_and_nothing_is_written(tiny_model, tmp_path, capsys):
    from napari_raysam.core.sam.models import save_checkpoint

    path = save_checkpoint(tmp_path / "tiny.pt", tiny_model.sam, "tiny",
                           tiny_config=tiny_model.tiny_config)
    _register("tiny-run", path, base="tiny_cells")
    out_dir = tmp_path / "share"
    out_dir.mkdir()
    for spec in ("tiny-run", "run:tiny-run", str(path), "tiny_cells"):
        assert cli.main(["models", "export", spec, "--out", str(out_dir / "m.zip")]) == 2
        err = capsys.readouterr().err
        assert "not exportable to bioimage.io" in err and "tiny" in err, spec
        assert "vit_b_lm" in err  # what to do instead
    assert list(out_dir.iterdir()) == []


def test_bad_output_paths_are_refused_before_any_work(vit_b_checkpoint, tmp_path, capsys):
    _register("cells-vitb-1", vit_b_checkpoint)
    dest = tmp_path / "dest"
    (dest / "a-folder").mkdir(parents=True)
    (dest / "taken.zip").write_bytes(b"an earlier package")
    cases = {
        str(dest / "no-such-folder" / "m.zip"): "does not exist",
        str(dest / "a-folder"): "is a folder",
        str(dest / "model.tar"): "is a .zip file",
        str(dest / "taken.zip"): "exists already",
    }
    for out, message in cases.items():
        assert cli.main(["models", "export", "cells-vitb-1", "--out", out]) == 2
        assert message in capsys.readouterr().err, out
    assert sorted(p.name for p in dest.rglob("*")) == ["a-folder", "taken.zip"]
    assert (dest / "taken.zip").read_bytes() == b"an earlier package"
    assert cli.main(["models", "export", "no-such-run", "--out", str(dest / "x.zip")]) == 2
    assert "cells-vitb-1" in capsys.readouterr().err  # names the models there are


def test_train_dock_export_button_asks_where_and_reports_in_the_dock(
        vit_b_checkpoint, tiny_model, make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """The button checks the fetched model in a worker, asks for the file (mocked dialog) and
    exports in a worker; problems show in the dock. (The export itself: the CLI test above.)"""
    from qtpy.QtCore import Qt

    from napari_raysam._qt import train_model_actions
    from napari_raysam.core.model_store import list_registered_models
    from napari_raysam.core.sam.models import save_checkpoint

    viewer = make_napari_viewer(show=True)
    dock = viewer.window.add_plugin_dock_widget("napari-raysam", "Train")[1]
    asked: list = []
    answer = {"path": ""}
    monkeypatch.setattr(train_model_actions.QFileDialog, "getSaveFileName",
                        lambda *a: (asked.append(a[2]) or answer["path"], "*.zip"))
    assert not dock.export_button.isEnabled()  # nothing fetched yet

    def fetched(name):
        dock._on_fetched(next(m for m in list_registered_models() if m.name == name))
        assert dock.export_button.isEnabled()

    def click_and_wait(until):
        qtbot.mouseClick(dock.export_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: until in dock.status.text(), timeout=120_000)

    tiny = save_checkpoint(tmp_path / "tiny.pt", tiny_model.sam, "tiny",
                           tiny_config=tiny_model.tiny_config)
    _register("tiny-run", tiny, base="tiny_cells")
    fetched("tiny-run")
    click_and_wait("not exportable")
    assert asked == []  # refused before the dialog opened

    _register("cells-vitb-1", vit_b_checkpoint)
    fetched("cells-vitb-1")
    click_and_wait("Export cancelled")  # the dialog closed without a file
    assert asked == [str(Path.home() / "cells-vitb-1.zip")]

    answer["path"] = str(tmp_path / "gone" / "cells.zip")
    click_and_wait("does not exist")  # checked in the worker before any export work
    assert not (tmp_path / "gone").exists()
    assert "e05050" in dock.status.styleSheet()  # shown as an error

    from napari_raysam.core.sam.export import ExportResult, scaling_note

    note = scaling_note({"scaling": "percentile"})  # a finished export's warning reaches the dock
    dock._exported(ExportResult(tmp_path / "cells.zip", "vit_b", 10**8, "passed", note))
    assert "Wrote" in dock.status.text() and note in dock.status.text()
