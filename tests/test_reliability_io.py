"""Bad-input matrix rows for the Export and Train docks and the CLI (no Ray cluster needed).

See docs/reliability.md for the full matrix; rows covered elsewhere are referenced there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import free_port
from napari_raysam.core.dataset.synthetic import make_sample
from test_export_widget import export_fails, preview

ODD = "my set ü 細胞"  # a folder name with spaces and non-ASCII characters


def is_error(widget) -> bool:
    return "e05050" in widget.status.styleSheet()


def napari_alive(viewer) -> None:
    layer = viewer.add_points(np.zeros((1, 2)), name="alive probe")
    viewer.layers.remove(layer)


def files_under(*dirs: Path) -> list[Path]:
    return [p for d in dirs if d.exists() for p in d.rglob("*")]


# --- Export dock ---------------------------------------------------------------------------

def _export_case(case: str):
    s = make_sample((64, 64), seed=3)
    image, labels = s.image.astype(np.float32), s.labels.astype(np.int32)
    match case:
        case "negative-labels":
            labels[labels == 1] = -1
            return image, labels, ["negative", "0 for background"]
        case "ids-beyond-uint32":
            big = np.where(labels > 0, labels.astype(np.int64) + 2**33, 0)
            return image, big, ["does not fit in uint32", "relabel"]
        case "nan-image":
            image[5, 5] = np.nan
            return image, labels, ["NaN", "nan_to_num"]
        case "constant-image":
            return np.full_like(image, 3), labels, ["constant", "with content"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["negative-labels", "ids-beyond-uint32", "nan-image",
                                  "constant-image"])
def test_export_dock_refuses_before_writing(qtbot, make_napari_viewer, tmp_path, case):
    from napari_raysam._qt.export_widget import ExportWidget

    viewer = make_napari_viewer()
    image, labels, expected = _export_case(case)
    viewer.add_image(image, name="img")
    viewer.add_labels(labels, name="img objects")
    widget = ExportWidget(viewer)
    dest = tmp_path / "out" / "set"
    widget.dest_edit.setText(str(dest))
    assert widget.selected_pairs() == [("img", "img objects")]
    assert export_fails(qtbot, widget)  # the planning worker refuses: no writing starts
    text = widget.status.text()
    assert is_error(widget) and all(k in text for k in expected), text
    assert files_under(tmp_path / "out") == []  # nothing written, no temp folder either
    napari_alive(viewer)


def _ome_5d(t=2, z=3):
    """T, Z, C, Y, X (two channels) and T, Z, Y, X labels; plane (t, z) from seed t * z + z."""
    samples = [make_sample((64, 64), seed=10 + k) for k in range(t * z)]
    image = np.stack([np.stack([s.image, s.image[::-1]]) for s in samples])
    image = image.reshape(t, z, 2, 64, 64).astype(np.uint16)
    labels = np.stack([s.labels for s in samples]).reshape(t, z, 64, 64).astype(np.uint16)
    return image, labels


@pytest.mark.parametrize("case", ["5d-ome-stack", "5d-ome-stack-objects-layer",
                                  "5d-ome-stack-current-plane"])
def test_export_dock_writes_5d_stacks(qtbot, make_napari_viewer, tmp_path, case):
    """Gap G2 (fixed): every annotated (T, Z) plane of a T,Z,C,Y,X stack is one sample."""
    from napari_raysam._qt.export_widget import ExportWidget
    from napari_raysam.core.dataset import open_dataset

    viewer = make_napari_viewer()
    image, labels = _ome_5d()
    labels[0, 1] = 0  # (T 0, Z 1) is not annotated
    if case == "5d-ome-stack-objects-layer":  # what the Segment dock commits into
        labels = labels[:, :, None]
    viewer.add_image(image, name="img", metadata={"raysam_channel_axis": 2,
                                                  "channel_names": ["nuclei", "cyto"]})
    viewer.add_labels(labels, name="img objects")
    widget = ExportWidget(viewer)
    assert widget.selected_pairs() == [("img", "img objects")]
    widget.dest_edit.setText(str(tmp_path / "set"))
    if case == "5d-ome-stack-current-plane":
        widget.planes_combo.setCurrentIndex(1)
        viewer.dims.set_current_step(0, 1)
        viewer.dims.set_current_step(1, 2)
    plan = preview(qtbot, widget)
    assert plan is not None, widget.status.text()
    wanted = [(1, 2)] if case == "5d-ome-stack-current-plane" else \
        [(0, 0), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert [p.input.plane_index for p in plan.samples] == wanted
    if case != "5d-ome-stack-current-plane":
        assert "plane(s) (0, 1) have no objects" in widget.plan_label.text()
    worker = widget.export()
    assert worker is not None, widget.status.text()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    ts = open_dataset(tmp_path / "set")
    assert sorted(r.plane for r in ts.samples) == sorted(t * 3 + z for t, z in wanted)
    for record in ts.samples:
        t, z = divmod(record.plane, 3)  # the manifest's plane: row-major (T, Z) index
        assert record.shape == [2, 64, 64] and record.channel_axis == 0
        assert record.channel_names == ["nuclei", "cyto"]
        np.testing.assert_array_equal(tifffile.imread(ts.path / record.image), image[t, z])
        stored = tifffile.imread(ts.path / record.labels)
        np.testing.assert_array_equal(stored, labels[t, z].reshape(64, 64))


@pytest.mark.parametrize("case", ["labels-not-matching-planes", "one-stack-axis-with-channels",
                                  "one-stack-axis-no-channels", "plane-index-not-per-axis"])
def test_stack_shape_errors(case):
    """Wrong stack shapes are refused with the problem and the fix; channel_axis is only
    suggested when none was given."""
    from napari_raysam.core.dataset import DatasetError, planes_to_inputs

    image, labels = _ome_5d()
    args, expected, absent = {
        "labels-not-matching-planes": (
            (image, labels[:, :2], "img", (0, 1), 2),
            ["labels shape (2, 2, 64, 64)", "does not match the image's planes",
             "expected (2, 3, 64, 64)", "pair the image with the labels"], []),
        "one-stack-axis-with-channels": (
            (image, labels, "img", 0, 2),
            ["stack of 2D planes", "channels on axis 2", "leaves 3D planes",
             "stack_axis=(0, 1)"], ["channel_axis"]),
        "one-stack-axis-no-channels": (
            (image, labels, "img", 0, None),
            ["stack of 2D planes", "leaves 4D planes", "stack_axis=(0, 1)", "channel_axis"], []),
        "plane-index-not-per-axis": (
            (image, labels, "img", (0, 1), 2, [1]),
            ["one index per stack axis", "(0, 0)"], []),
    }[case]
    with pytest.raises(DatasetError) as info:
        planes_to_inputs(*args)
    text = str(info.value)
    assert all(k in text for k in expected) and not any(k in text for k in absent), text


def test_odd_path_export_validate_info_and_runner_checks(qtbot, make_napari_viewer, tmp_path,
                                                          monkeypatch, capsys):
    """Spaces + non-ASCII: Export dock -> `dataset validate`/`info` -> training checks."""
    from napari_raysam import cli
    from napari_raysam._qt.export_widget import ExportWidget
    from napari_raysam.core.training import runner
    from napari_raysam.core.training.config import TrainConfig

    viewer = make_napari_viewer()
    for seed in (1, 2):
        s = make_sample((64, 64), seed=seed)
        viewer.add_image(s.image, name=f"zelle {seed} é")
        viewer.add_labels(s.labels, name=f"zelle {seed} é objects")
    widget = ExportWidget(viewer)
    dest = tmp_path / ODD / "train set é"
    widget.dest_edit.setText(str(dest))
    assert widget.export() is not None, widget.status.text()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert widget.last_export_path == str(dest), widget.status.text()
    assert cli.main(["dataset", "validate", str(dest)]) == 0
    assert cli.main(["dataset", "info", str(dest)]) == 0
    assert "2 sample" in capsys.readouterr().out

    class Checked(Exception):
        pass

    def stop(*a, **k):
        raise Checked  # every check before Ray passed on this path

    monkeypatch.setattr(runner, "ensure_ray", stop)
    with pytest.raises(Checked):
        runner.run_training(TrainConfig(dataset=str(dest), storage=str(tmp_path / ODD / "runs")))


def test_cli_create_refuses_float_labels(tmp_path, capsys):
    from napari_raysam import cli

    s = make_sample((48, 48), seed=5)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", s.image)
    tifffile.imwrite(tmp_path / "labels" / "a.tif", s.labels.astype(np.float32) + 0.5)
    out = tmp_path / "set"
    code = cli.main(["dataset", "create", "--images", str(tmp_path / "images"),
                     "--labels", str(tmp_path / "labels"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "non-integer" in err and "integer ids" in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "raysam-tmp" in p.name]


# --- Train dock: cluster entry -------------------------------------------------------------



SECRET = "tok en-with-space\n"
TRAIN_CASES = {  # case: (address, token env value, storage, expected keywords)
    "scheme-typo": ("htp://head:8265", None, "/tmp/st", ["scheme 'htp'", "http://head-host"]),
    "port-without-host": (":8265", None, "/tmp/st", ["port but no host", "http://head-host"]),
    "ipv6-literal-unreachable": (f"http://[::1]:{free_port()}", None, "STORE",
                                 ["Cannot reach", "http://[::1]", "port"]),
    "not-a-ray-dashboard": ("WEB", None, "STORE", ["not a Ray dashboard", "8265"]),
    "unknown-storage-scheme": ("WEB", None, "ftp://host/x", ["scheme 'ftp'", "s3://"]),
    "storage-scheme-without-slashes": ("WEB", None, "s3:bucket/x", ["without '//'"]),
    "token-with-whitespace": ("WEB", SECRET, "STORE", ["whitespace", "tr -d"]),
    "token-pasted-as-env-name": ("WEB", "PASTE", "STORE", ["not an environment variable name"]),
    "token-env-unset": ("WEB", "UNSET", "STORE", ["is not set", "set it"]),
    "remote-without-storage": ("WEB", None, "", ["needs a storage URI"]),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_dock_cluster_inputs(qtbot, make_napari_viewer, tmp_path, monkeypatch, web_server,
                                   case):
    from napari_raysam._qt.train_widget import TrainWidget

    address, token, storage, expected = TRAIN_CASES[case]
    store = tmp_path / "store"
    viewer = make_napari_viewer()
    dock = TrainWidget(viewer)
    dock.profile_combo.addItem("lab")
    dock.profile_combo.setCurrentText("lab")
    dock.address_edit.setText(web_server if address == "WEB" else address)
    dock.storage_edit.setText(str(store) if storage == "STORE" else storage)
    if token == "PASTE":
        dock.token_env_edit.setText("abc.def-123")
    elif token == "UNSET":
        monkeypatch.delenv("RS_UNSET_TOKEN", raising=False)
        dock.token_env_edit.setText("RS_UNSET_TOKEN")
    elif token is not None:
        monkeypatch.setenv("RS_TEST_TOKEN", token)
        dock.token_env_edit.setText("RS_TEST_TOKEN")
    t = time.monotonic()
    worker = dock.connect()
    if worker is not None:  # the form was valid: the probe fails in a worker
        qtbot.waitUntil(lambda: is_error(dock), timeout=15_000)
    text = dock.status.text()
    assert is_error(dock) and all(k in text for k in expected), text
    assert time.monotonic() - t < 10
    assert "tok en" not in text and "Not connected" in dock.summary.text()
    assert dock.start() is None or is_error(dock)  # Start refuses the same way
    config, data = (Path(os.environ[f"NAPARI_RAYSAM_{k}"]) for k in ("CONFIG", "DATA"))
    assert files_under(config, data, store) == []  # no profile, run index or upload written
    napari_alive(viewer)


def test_train_dock_start_without_training_set(make_napari_viewer):
    from napari_raysam._qt.train_widget import TrainWidget

    viewer = make_napari_viewer()
    dock = TrainWidget(viewer)
    assert dock.start() is None
    assert is_error(dock) and "Choose a training set folder" in dock.status.text()
    napari_alive(viewer)


# --- CLI: the same cluster inputs ----------------------------------------------------------

@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    from napari_raysam.core.dataset import SampleInput, write_dataset

    root = tmp_path_factory.mktemp("cli") / ODD
    samples = [make_sample((48, 48), seed=s) for s in (1, 2)]
    return write_dataset(root / "set", [SampleInput(s.image, s.labels, f"s{i}")
                                        for i, s in enumerate(samples)]).path


@pytest.mark.parametrize("case", ["scheme-typo", "port-without-host", "not-a-ray-dashboard",
                                  "unknown-storage-scheme", "token-with-whitespace"])
def test_cli_submit_cluster_inputs(small_set, web_server, tmp_path, monkeypatch, capsys, case):
    from napari_raysam import cli

    address, token, storage, expected = TRAIN_CASES[case]
    argv = ["submit", str(small_set), "--address", web_server if address == "WEB" else address,
            "--storage", str(tmp_path / "store") if storage == "STORE" else storage]
    if token:
        monkeypatch.setenv("RS_TEST_TOKEN", token)
        argv += ["--token-env", "RS_TEST_TOKEN"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and all(k in err for k in expected), err
    assert "Traceback" not in err and "tok en" not in err
    config, data = (Path(os.environ[f"NAPARI_RAYSAM_{k}"]) for k in ("CONFIG", "DATA"))
    assert files_under(config, data, tmp_path / "store") == []


def test_cli_cluster_start_refuses_whitespace_token(monkeypatch, capsys):
    from napari_raysam import cli

    monkeypatch.setenv("RS_TEST_TOKEN", SECRET)
    assert cli.main(["cluster", "start", "--token-env", "RS_TEST_TOKEN"]) == 2
    err = capsys.readouterr().err
    assert "whitespace" in err and "tok en" not in err
    config = Path(os.environ["NAPARI_RAYSAM_CONFIG"])
    assert not list(config.rglob("*.json")) if config.exists() else True  # no head recorded


def test_cli_submit_refuses_a_run_name(small_set, tmp_path, capsys):
    """Row 72: submit always names its run itself (a reused name would mix two runs' files)."""
    from napari_raysam import cli

    store = tmp_path / "store"
    argv = ["submit", str(small_set), "--address", "local", "--storage", str(store),
            "--name", "mine"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "fresh run name; drop --name" in err and "Traceback" not in err
    assert not store.exists()
