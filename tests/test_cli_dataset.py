"""`napari-raysam dataset create|validate|info` through the dispatcher and a real subprocess."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_raysam import cli


@pytest.fixture(autouse=True)
def only_dataset_commands(monkeypatch):
    """Isolate from other command groups (they may be mid-development)."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("napari_raysam.cli.dataset",))


def _folders(tmp_path: Path, n: int = 3, start: int = 0) -> tuple[Path, Path]:
    imgs, labs = tmp_path / "images", tmp_path / "labels"
    imgs.mkdir(exist_ok=True)
    labs.mkdir(exist_ok=True)
    yy, xx = np.mgrid[:32, :40]
    for i in range(start, start + n):
        rng = np.random.default_rng(i)
        image = rng.normal(50, 5, (32, 40)).astype(np.float32)
        labels = np.zeros((32, 40), np.uint16)
        for k in range(1, 3):
            cy, cx = rng.integers(6, 26), rng.integers(6, 34)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 20
            labels[disc], image[disc] = k, 120
        tifffile.imwrite(imgs / f"im{i}.tif", image)
        tifffile.imwrite(labs / f"im{i}_masks.tif", labels)
    return imgs, labs


def test_create_info_validate(tmp_path, capsys):
    imgs, labs = _folders(tmp_path)
    out = tmp_path / "set"
    assert cli.main(["dataset", "create", "--images", str(imgs), "--labels", str(labs),
                     "--out", str(out), "--seed", "4"]) == 0
    text = capsys.readouterr().out
    assert "3 sample(s)" in text and "content hash" in text
    assert cli.main(["dataset", "info", str(out), "--samples"]) == 0
    text = capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["content_hash"] in text and "val" in text and "im0.tif" in text
    assert cli.main(["dataset", "validate", str(out)]) == 0
    assert "valid" in capsys.readouterr().out

    _folders(tmp_path, n=2, start=10)  # two new pairs next to the old ones
    assert cli.main(["dataset", "create", "--images", str(imgs), "--labels", str(labs),
                     "--pattern", "im1?.tif", "--out", str(out), "--append"]) == 0
    assert "append to" in capsys.readouterr().out
    assert len(json.loads((out / "manifest.json").read_text())["samples"]) == 5

    # a hand-edited hash makes validate fail with exit 1 and a message naming the file
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["samples"][0]["image_sha256"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert cli.main(["dataset", "validate", str(out)]) == 1
    text = capsys.readouterr().out
    assert "INVALID" in text and "s00000.tif" in text


def test_user_errors_exit_2(tmp_path, capsys):
    imgs, labs = _folders(tmp_path, n=2)
    (labs / "im0_masks.tif").unlink()
    code = cli.main(["dataset", "create", "--images", str(imgs), "--labels", str(labs),
                     "--out", str(tmp_path / "set")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "im0.tif" in err
    assert not (tmp_path / "set").exists()
    assert cli.main(["dataset", "info", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    assert cli.main(["dataset", "info", str(tmp_path / "plain")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    assert cli.main(["dataset", "validate", str(tmp_path)]) == 1
    assert cli.main(["dataset"]) == 1


@pytest.mark.skipif(importlib.util.find_spec("napari_raysam.cli.models") is None,
                    reason="the dispatcher's other command module is not written yet")
def test_info_in_a_subprocess(tmp_path):
    imgs, labs = _folders(tmp_path, n=2)
    out = tmp_path / "set"
    cli.main(["dataset", "create", "--images", str(imgs), "--labels", str(labs), "--out", str(out)])
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "napari_raysam.cli", "dataset", "info", str(out)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "samples:      2" in done.stdout and "content hash" in done.stdout



@pytest.mark.parametrize("argv", [["dataset", "info", "SET", "--samples"], ["--help"]])
def test_a_closed_pipe_ends_the_command_quietly(tmp_path, argv):
    """`napari-raysam dataset info SET | head -1`: the reader is gone before the output is
    written (read end closed at once, so the write really meets a closed pipe): no traceback."""
    imgs, labs = _folders(tmp_path, n=2)
    out = tmp_path / "set"
    cli.main(["dataset", "create", "--images", str(imgs), "--labels", str(labs), "--out", str(out)])
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    argv = [str(out) if a == "SET" else a for a in argv]
    proc = subprocess.Popen([sys.executable, "-m", "napari_raysam.cli", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # like `| head -1` that has already exited
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 1)
    assert "Traceback" not in err and "BrokenPipeError" not in err and err == "", err


def _tzcyx(tmp_path: Path) -> tuple[Path, Path]:
    """One T, Z, C, Y, X TIFF (2, 3, 2, 32, 40) and its T, Z, Y, X labels; plane (1, 2) empty."""
    imgs, labs = tmp_path / "images", tmp_path / "labels"
    imgs.mkdir()
    labs.mkdir()
    rng = np.random.default_rng(7)
    image = rng.normal(50, 5, (2, 3, 2, 32, 40)).astype(np.float32)
    labels = np.zeros((2, 3, 32, 40), np.uint16)
    for t in range(2):
        for z in range(3):
            if (t, z) == (1, 2):
                continue
            labels[t, z, 4 + 3 * z:14 + 3 * z, 5 + 10 * t:15 + 10 * t] = 1
            labels[t, z, 20:28, 25:35] = 2
            image[t, z, 1][labels[t, z] > 0] = 150  # the objects glow in channel 1
    tifffile.imwrite(imgs / "movie.tif", image)
    tifffile.imwrite(labs / "movie_masks.tif", labels)
    assert tifffile.imread(imgs / "movie.tif").shape == (2, 3, 2, 32, 40)
    return imgs, labs


@pytest.mark.parametrize("axes", [["0", "1"], ["0,1"]])
def test_create_from_a_5d_stack_with_two_stack_axes(tmp_path, capsys, axes):
    imgs, labs = _tzcyx(tmp_path)
    out = tmp_path / "set"
    assert cli.main(["dataset", "create", "--images", str(imgs), "--labels", str(labs),
                     "--out", str(out), "--stack-axis", *axes, "--channel-axis", "2"]) == 0
    text = capsys.readouterr().out
    assert "skipped: movie.tif: planes [(1, 2)] have no objects" in text, text
    samples = json.loads((out / "manifest.json").read_text())["samples"]
    assert sorted(s["plane"] for s in samples) == [0, 1, 2, 3, 4]  # t * Z + z, (1, 2) skipped
    assert all(s["shape"][-2:] == [32, 40] and s["n_objects"] == 2 for s in samples), samples
    assert cli.main(["dataset", "validate", str(out)]) == 0
    # without --stack-axis / --channel-axis both are inferred from the labels' shape
    assert cli.main(["dataset", "create", "--images", str(imgs), "--labels", str(labs),
                     "--out", str(tmp_path / "inferred")]) == 0
    again = json.loads((tmp_path / "inferred" / "manifest.json").read_text())["samples"]
    assert [s["image_sha256"] for s in again] == [s["image_sha256"] for s in samples]


def test_create_with_a_wrong_stack_axis_says_which(tmp_path, capsys):
    imgs, labs = _tzcyx(tmp_path)
    args = ["dataset", "create", "--images", str(imgs), "--labels", str(labs)]
    assert cli.main([*args, "--out", str(tmp_path / "a"), "--stack-axis", "0", "7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "movie.tif" in err and "stack axis 7 does not exist" \
        in err and "use 0..4" in err, err
    # the channel axis named as a stack axis: the shared checks explain
    assert cli.main([*args, "--out", str(tmp_path / "b"), "--stack-axis", "0", "1",
                     "--channel-axis", "1"]) == 2
    assert "same axis" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # not a number: argparse's usage error
        cli.main([*args, "--out", str(tmp_path / "c"), "--stack-axis", "z"])
    assert info.value.code == 2 and "not an axis number" in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in "abc")


def test_val_fraction_0_and_1_make_a_train_only_set_and_a_test_set(tmp_path, capsys,
                                                                    monkeypatch):
    imgs, labs = _folders(tmp_path, n=3)
    train_only, test_set = tmp_path / "train-only", tmp_path / "test-set"
    assert cli.main(["dataset", "create", "--images", str(imgs), "--labels", str(labs),
                     "--out", str(train_only), "--val-fraction", "0"]) == 0
    text = capsys.readouterr().out
    assert "train       3 samples" in text and "val fraction 0" in text
    assert cli.main(["dataset", "create", "--images", str(imgs), "--labels", str(labs),
                     "--out", str(test_set), "--val-fraction", "1"]) == 0
    text = capsys.readouterr().out
    assert "val         3 samples" in text and "A test set" in text
    splits = {s["split"] for s in json.loads((test_set / "manifest.json").read_text())["samples"]}
    assert splits == {"val"}
    assert cli.main(["dataset", "create", "--images", str(imgs), "--labels", str(labs),
                     "--out", str(tmp_path / "bad"), "--val-fraction", "1.5"]) == 2
    assert "from 0 to 1" in capsys.readouterr().err and not (tmp_path / "bad").exists()

    # where a split is then missing, the commands say so (before any model or cluster starts)
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("napari_raysam.cli.train",))
    assert cli.main(["train", str(test_set), "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "cannot be trained on" in err and "A test set" in err and "evaluate" in err
    assert cli.main(["evaluate", str(train_only), "--model", "tiny"]) == 2
    assert "val fraction 0" in capsys.readouterr().err
