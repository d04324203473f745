"""Faults with real processes: an export killed mid-way, a checkpoint download cut mid-way, the
job driver killed, and the local head killed while the Train dock follows a run.

One ``ray start --head`` (LocalHead) serves the Ray tests of this module; the head-kill test
runs last because it ends that head (and then reaps what the head left behind, by PID).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from napari_raysam.core.dataset import SampleInput, validate_dataset, write_dataset
from napari_raysam.core.dataset.debris import host_id
from napari_raysam.core.dataset.synthetic import make_sample

ODD = "my set ü 細胞"


def _inputs(n: int, size: int = 64, seed0: int = 0) -> list[SampleInput]:
    samples = [make_sample((size, size), seed=seed0 + i) for i in range(n)]
    return [SampleInput(s.image, s.labels, f"s{i}") for i, s in enumerate(samples)]


# --- export killed ---------------------------------------------------------------------------

EXPORTER = textwrap.dedent("""
    import sys, numpy as np
    from napari_raysam.core.dataset import SampleInput, write_dataset
    rng = np.random.default_rng(0)
    lab = np.zeros((256, 256), np.uint16); lab[40:90, 40:90] = 1; lab[120:200, 100:180] = 2
    inputs = [SampleInput(rng.normal(100, 20, (256, 256)).astype(np.float32), lab, f"big{i}")
              for i in range(400)]
    write_dataset(sys.argv[1], inputs, mode=sys.argv[2])
""")


@pytest.mark.parametrize("mode", ["new", "append"])
def test_export_killed_midway_leaves_previous_set_intact(tmp_path, mode):
    old = write_dataset(tmp_path / "old set", _inputs(3))
    before = (old.path / "manifest.json").read_bytes()
    dest = tmp_path / ("new set" if mode == "new" else "old set")
    proc = subprocess.Popen([sys.executable, "-c", EXPORTER, str(dest), mode],
                            stderr=subprocess.PIPE, start_new_session=True)
    images = (lambda: list(tmp_path.glob(".new set.raysam-tmp-*/images/*.tif"))) if mode == "new" \
        else (lambda: [p for p in (dest / "images").iterdir() if "-" in p.stem])
    deadline = time.monotonic() + 120
    while len(images()) < 20 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    assert len(images()) >= 20  # killed while writing, not before
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    report = validate_dataset(old.path)
    assert report.ok, report.text()
    assert (old.path / "manifest.json").read_bytes() == before  # the old set is untouched
    if mode == "new":
        assert not dest.exists()  # no half set visible under the chosen name
        hidden = list(tmp_path.glob(".new set.raysam-tmp-*"))
        assert hidden and all(p.name.startswith(".") for p in hidden)  # leftover is hidden
        assert f"-{proc.pid}-" in hidden[0].name  # it names its (now dead) writer
        note = validate_dataset(dest).warnings
    else:
        assert len(list((dest / "images").iterdir())) > 3  # orphans of the killed append...
        assert len(validate_dataset(dest).problems) == 0  # ...are not part of the set
        note = validate_dataset(dest).warnings
        assert "file(s) of an interrupted append" in "\n".join(note)
    assert any(f"(pid {proc.pid}) is gone" in n and "the next export or append into" in n
               for n in note), note
    # the next export into the same folder sweeps the dead export's debris
    live = tmp_path / f".live.raysam-tmp-0000beef-{os.getpid()}-{host_id()}"
    live.mkdir()  # a running writer's (ours): never swept
    nxt = write_dataset(dest, _inputs(2, seed0=50), mode=mode)
    assert not list(tmp_path.glob(".new set.raysam-tmp-*")) and live.is_dir()
    report = validate_dataset(nxt.path)
    assert report.ok and not report.warnings, report.text()
    files = sorted(p.name for p in nxt.path.rglob("*") if p.is_file())
    assert len(files) == 1 + 2 * len(nxt), files  # manifest + exactly the listed TIFFs


# --- checkpoint download cut ----------------------------------------------------------------

def test_interrupted_checkpoint_download_is_never_registered(tmp_path, monkeypatch):
    import napari_raysam.core.storage as storage_mod
    from napari_raysam.core import runs
    from napari_raysam.core.errors import RaysamError
    from napari_raysam.core.model_store import list_registered_models, model_store_dir
    from napari_raysam.core.runs.records import RunIndex, RunRecord
    from napari_raysam.core.sam import models

    run_dir = tmp_path / "storage" / "runs" / "run-cut"
    run_dir.mkdir(parents=True)
    models.save_checkpoint(run_dir / "model.pt", models.build_tiny_sam(), "tiny",
                           models.TinyConfig())
    (run_dir / "report.json").write_text('{"before": {}, "after": {}}')
    record = RunIndex().put(RunRecord(
        name="run-cut", profile="p", address="http://127.0.0.1:1",
        storage=str(tmp_path / "storage"),
        dataset_hash="h", dataset_uri="/d", config={"model": "tiny"}, submitted="now",
        state="SUCCEEDED"))
    real_hash = storage_mod._hash_stream
    cut = {"left": 1}

    def flaky(stream, sink=None):
        """The first download dies after 64 kB were written (the network drops)."""
        if sink is None or not cut["left"]:
            return real_hash(stream, sink)
        cut["left"] -= 1
        sink(stream.read(64 * 1024))
        raise OSError("connection reset by peer")

    monkeypatch.setattr(storage_mod, "_hash_stream", flaky)
    with pytest.raises(RaysamError, match="interrupted.*fetch the run again") as info:
        runs.fetch(record)
    assert "Traceback" not in str(info.value)
    store = model_store_dir()
    assert list_registered_models() == []
    assert not [p for p in store.rglob("*") if p.is_file() and p.name.endswith((".pt", "-part"))
                or ".part-" in p.name]
    model = runs.fetch(record)  # the retry completes
    assert [m.name for m in list_registered_models()] == ["run-cut"]
    assert model.sha256 == hashlib.sha256((run_dir / "model.pt").read_bytes()).hexdigest()
    models.load_checkpoint(model.path, device="cpu")


# --- against a real head ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def head(tmp_path_factory):
    from napari_raysam.core.cluster.local_head import LocalHead

    lh = LocalHead(state_file=tmp_path_factory.mktemp("fh") / "h.json", num_cpus=2)
    state = lh.start()
    try:
        yield lh, state
    finally:
        lh.stop()


@pytest.fixture
def profile(head, tmp_path):
    from napari_raysam.core.cluster import ClusterProfile

    return ClusterProfile(name="faults", address=head[1].address,
                          storage=str(tmp_path / ODD / "storage"))


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _driver(head_pid: int, run: str, timeout: float = 120) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in _descendants(head_pid):
            try:
                cmd = p.cmdline()
            except psutil.Error:
                continue
            if "napari_raysam.train" in cmd and run in cmd and "-c" not in cmd:
                return p
        time.sleep(0.3)
    raise AssertionError(f"no driver process for {run}")


@pytest.mark.ray
def test_odd_path_training_set_trains_on_the_cluster(profile, tmp_path):
    from napari_raysam.core import runs
    from napari_raysam.core.runs.records import RunIndex
    from napari_raysam.core.sam import models

    ts = write_dataset(tmp_path / ODD / "train set é", _inputs(2, 96))
    record = runs.submit(profile, ts.path, {"epochs": 1, "workers": 1, "lr": 3e-3})
    events = list(runs.follow(record, poll=0.3))
    assert events[-1].get("status") == "SUCCEEDED", [e.get("line") for e in events][-30:]
    model = runs.fetch(RunIndex().get(record.name))
    models.load_checkpoint(model.path, device="cpu")


@pytest.mark.ray
def test_killed_job_driver_fails_with_log_tail_and_keeps_checkpoint(head, profile, tmp_path):
    import torch

    from napari_raysam.core import runs
    from napari_raysam.core.errors import RaysamError
    from napari_raysam.core.images import to_sam_rgb
    from napari_raysam.core.model_store import list_registered_models
    from napari_raysam.core.runs.records import RunIndex
    from napari_raysam.core.sam.embeddings import EmbeddingCache
    from napari_raysam.core.sam.models import load_model
    from napari_raysam.core.sam.segment import segment
    from napari_raysam.core.training.config import TrainConfig
    from napari_raysam.core.training.runner import build_trained_sam

    ts = write_dataset(tmp_path / "set", _inputs(3, 96))
    record = runs.submit(profile, ts.path, {"epochs": 200, "workers": 1, "lr": 3e-3})
    driver = None
    for event in runs.follow(record, poll=0.3):
        if event.get("event") == "epoch" and driver is None:
            driver = _driver(head[1].pid, record.name)
            driver.send_signal(signal.SIGKILL)
            t_kill = time.monotonic()
        last = event
    assert driver is not None, "no epoch event arrived"
    assert last["event"] == "status" and last["status"] == "FAILED", last
    assert time.monotonic() - t_kill < 30
    stored = RunIndex().get(record.name)
    assert stored.state == "FAILED" and stored.log_tail.strip(), stored
    with pytest.raises(RaysamError, match="no final model.pt") as info:
        runs.fetch(stored)
    assert f"runs fetch {record.name} --partial" in str(info.value)  # the refusal names the fix
    run_dir = Path(profile.storage) / "runs" / record.name
    ckpts = sorted(run_dir.glob("checkpoint_epoch_*"))
    assert ckpts, sorted(p.name for p in run_dir.iterdir())
    state = torch.load(next(ckpts[-1].glob("*.pt")), map_location="cpu", weights_only=True)
    loaded = build_trained_sam(TrainConfig(dataset=str(ts.path), model=state["model_spec"]), state)
    assert loaded.sam is not None and state["epoch"] >= 1
    # the partial fetch: the newest complete checkpoint becomes a registered, loadable model
    model = runs.fetch(stored, partial=True)
    assert model.partial and model.epoch == state["epoch"] >= 1
    assert model.name == f"{record.name}.partial-epoch{model.epoch}"
    assert [m.name for m in list_registered_models()] == [model.name]
    assert model.sha256 == hashlib.sha256(Path(model.path).read_bytes()).hexdigest()
    partial = load_model(f"run:{model.name}", device="cpu")  # weights_only, like any fetch
    assert partial.lineage["partial"] is True and partial.lineage["epoch"] == model.epoch
    assert partial.lineage["run_state"] == "FAILED"
    sample = make_sample((96, 96), seed=5)
    emb = EmbeddingCache(tmp_path / "emb").get_or_compute(partial, to_sam_rgb(sample.image),
                                                          precision="fp32")
    mask = segment(partial, emb, box=[20, 20, 70, 70])
    assert mask.shape == (96, 96) and mask.dtype == bool


@pytest.mark.ray
def test_head_killed_while_the_dock_follows(qtbot, make_napari_viewer, head, profile, tmp_path):
    """Runs last: it ends the module's head (and reaps what it left behind, by PID)."""
    from qtpy.QtCore import QTimer

    from napari_raysam._qt.train_widget import TrainWidget
    from napari_raysam.core import runs

    ts = write_dataset(tmp_path / "set", _inputs(3, 96))
    record = runs.submit(profile, ts.path, {"epochs": 200, "workers": 1, "lr": 3e-3})
    viewer = make_napari_viewer()
    dock = TrainWidget(viewer, head=head[0])
    dock.profile_combo.addItem("faults")
    dock.profile_combo.setCurrentText("faults")
    dock.address_edit.setText(head[1].address)
    dock.storage_edit.setText(profile.storage)
    dock.follow(record)
    qtbot.waitUntil(lambda: "RUNNING" in dock.status.text() or bool(dock.plot.epochs),
                    timeout=120_000)
    ticks: list[int] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(50)
    left_behind = _descendants(head[1].pid)
    try:
        os.killpg(os.getpgid(head[1].pid), signal.SIGKILL)
        t = time.monotonic()
        qtbot.waitUntil(lambda: "Lost contact" in dock.status.text(), timeout=10_000)
        took = time.monotonic() - t
        text = dock.status.text()
        assert "restart the local cluster" in text and "re-attach" in text, text
        assert not dock.cancel_button.isEnabled()
        qtbot.wait(500)
        assert len(ticks) >= 0.5 * (took + 0.5) / 0.05  # the Qt loop kept running
        napari_probe = viewer.add_points([[0, 0]])
        viewer.layers.remove(napari_probe)
        print(f"dock reported the lost head after {took:.1f} s: {text}")
    finally:
        timer.stop()
        for p in left_behind:  # descendants of our head that left its process group
            try:
                p.kill()
            except psutil.Error:
                pass
