"""The command line itself (no Ray): every option's help states its default, `models list`,
and `train` registering its model and printing the before -> after table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from napari_raysam import cli
from napari_raysam.core.runs.text import before_after_table
from napari_raysam.core.training.report import NO_VAL

BEFORE = {"val_miou_point": 0.41, "val_miou_box": 0.52, "val_miou_corrected": 0.60,
          "val_objects": 23}
AFTER = {"val_miou_point": 0.71, "val_miou_box": 0.80, "val_miou_corrected": 0.84,
         "val_objects": 23}


def _parsers(parser: argparse.ArgumentParser, path: str = "napari-raysam"):
    """(command path, parser) for the parser and every subcommand below it."""
    yield path, parser
    for action in parser._actions:  # argparse has no public walk; fine in a test
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_states_its_default():
    commands = dict(_parsers(cli.build_parser()))
    for must in ("train", "submit", "evaluate", "dataset create", "demo", "cluster check",
                 "runs fetch", "models list"):
        assert f"napari-raysam {must}" in commands, sorted(commands)
    missing = []
    for path, parser in commands.items():
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction) \
                    or action.required:
                continue  # positionals, -h, and required options (nothing to default to)
            text = (action.help or "") % {"default": action.default, "prog": path}
            if "default" not in text:
                missing.append(f"{path} {action.option_strings[-1]}: {action.help!r}")
    assert not missing, "\n".join(missing)


def test_train_defaults_to_the_trained_builtin_model_everywhere():
    from napari_raysam.core.training.config import TrainConfig, from_namespace
    from napari_raysam.train import add_train_arguments

    commands = dict(_parsers(cli.build_parser()))
    for path in ("napari-raysam train", "napari-raysam submit"):
        assert commands[path].parse_args(["ds"]).model == "tiny_cells", path
    job = argparse.ArgumentParser()
    add_train_arguments(job)  # `python -m napari_raysam.train`, the job entrypoint
    assert from_namespace(job.parse_args(["ds"])).model == "tiny_cells"
    assert TrainConfig(dataset="ds").model == "tiny_cells"
    help_text = commands["napari-raysam train"].format_help()
    assert "(default: tiny_cells)" in " ".join(help_text.split())


def test_before_after_table_names_each_score_and_counts_val_objects():
    table = before_after_table(BEFORE, AFTER, rounds=3)
    lines = table.splitlines()
    assert "23 val objects" in lines[0] and "before -> after" in lines[0]
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert set(rows) == {"point", "box", "corrected"}
    assert lines[4].startswith("verdict: improved (decided by the val box mIoU")
    assert "0.410 -> 0.710" in rows["point"] and "(+0.300)" in rows["point"]
    assert "0.520 -> 0.800" in rows["box"] and "bounding box" in rows["box"]
    assert "3 correction click" in rows["corrected"]
    assert "WORSE" not in table
    assert "WORSE" in before_after_table(AFTER, BEFORE, rounds=3)
    assert before_after_table(None, None) == NO_VAL
    assert before_after_table({}, {"val_miou_point": None}) == NO_VAL


def test_demo_prints_the_same_table(tmp_path):
    from napari_raysam.demo import DemoOptions, DemoResult, report_text

    opts = DemoOptions.small(out=str(tmp_path))
    result = DemoResult(tmp_path, tmp_path / "ds", tmp_path / "m.pt", tmp_path / "r.json",
                        tmp_path / "c.png", BEFORE, AFTER, 60.0)
    text = report_text(result, opts, "run-x")
    assert before_after_table(BEFORE, AFTER, rounds=opts.correction_rounds) in text
    assert "run:run-x" in text


def _fake_training(calls: list):
    """Stands in for core.training.runner.run_training: writes a real tiny model.pt and a
    report.json into the run folder, as a folder-storage run leaves them."""
    from napari_raysam.core.sam.models import load_model, save_checkpoint
    from napari_raysam.core.training.runner import RunOutcome

    def run_training(config, on_event=None, log_to_driver=True):
        calls.append(config)
        run_dir = Path(config.storage) / "run-cli-1"
        run_dir.mkdir(parents=True)
        tiny = load_model("tiny", device="cpu")
        save_checkpoint(run_dir / "model.pt", tiny.sam, "tiny", tiny_config=tiny.tiny_config)
        (run_dir / "report.json").write_text(json.dumps({"before": BEFORE, "after": AFTER}))
        return RunOutcome("run-cli-1", str(run_dir), str(run_dir / "model.pt"),
                          str(run_dir / "report.json"), 1, [], dict(BEFORE), dict(AFTER))

    return run_training


def test_train_registers_its_model_and_prints_before_after(tmp_path, monkeypatch, capsys):
    from napari_raysam.core.model_store import list_registered_models
    from napari_raysam.core.sam.models import load_model
    from napari_raysam.core.training import runner

    calls: list = []
    monkeypatch.setattr(runner, "run_training", _fake_training(calls))
    assert cli.main(["train", str(tmp_path / "ds"), "--storage", str(tmp_path / "runs"),
                     "--correction-rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert calls[0].model == "tiny_cells"
    assert before_after_table(BEFORE, AFTER, rounds=2) in out
    assert "run:run-cli-1" in out
    (model,) = list_registered_models()
    assert model.name == "run-cli-1" and model.base_model == "tiny_cells"
    assert Path(model.path) == tmp_path / "runs" / "run-cli-1" / "model.pt"
    assert model.metrics["after"]["val_miou_box"] == AFTER["val_miou_box"]
    assert load_model("run:run-cli-1", device="cpu").model_type == "tiny"
    # and `models list` shows it among the built-in and micro-sam names
    assert cli.main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "run:run-cli-1" in listing and "base tiny_cells" in listing


def test_models_list_groups_builtin_microsam_and_registered(capsys):
    from napari_raysam.core.sam.models import registry_names

    assert cli.main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    headers = [i for i, line in enumerate(lines) if not line.startswith(" ")]
    assert [lines[i].split(" ")[0] for i in headers] == ["built-in", "micro-sam", "fine-tuned"]
    builtin = lines[headers[0] + 1:headers[1]]
    assert [line.split()[0] for line in builtin] == ["tiny_cells", "tiny"]
    micro = [line.strip() for line in lines[headers[1] + 1:headers[2]]]
    assert micro == registry_names() and "vit_b_lm" in micro
    assert "none yet" in lines[headers[2] + 1]


@pytest.mark.parametrize("argv", [["train", "--help"], ["submit", "--help"],
                                  ["dataset", "create", "--help"], ["evaluate", "--help"]])
def test_help_shows_defaults(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0
    assert "(default: " in capsys.readouterr().out
