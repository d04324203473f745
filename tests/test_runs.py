"""Runs: option checks, run index, path traversal (no Ray); then submit, follow, cancel, a failed
job, fetch + register and re-attach against one real ``ray start --head`` on 127.0.0.1."""

from __future__ import annotations

import json
import shlex
import sys
import threading
import time
from pathlib import Path

import pytest

from napari_raysam.core import runs
from napari_raysam.core.cluster import ClusterProfile, make_client
from napari_raysam.core.cluster.local_head import LocalHead
from napari_raysam.core.dataset.upload import upload_dataset
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.events import append_event
from napari_raysam.core.model_store import list_registered_models
from napari_raysam.core.runs.records import RunIndex, RunRecord
from napari_raysam.core.storage import Storage


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    out = {k: tmp_path / k for k in ("config", "data", "cache")}
    for key, path in out.items():
        monkeypatch.setenv(f"NAPARI_RAYSAM_{key.upper()}", str(path))
    return out


def _record(name="run-1", storage="/tmp/x", profile="p", address="http://127.0.0.1:1",
            **kw) -> RunRecord:
    return RunRecord(name=name, profile=profile, address=address, storage=storage,
                     dataset_hash="h", dataset_uri="/d", config={"model": "tiny"},
                     submitted=time.strftime("%Y-%m-%dT%H:%M:%S"), **kw)


def test_train_options_are_checked_before_anything_runs():
    assert runs.train_argv({"epochs": 2, "mode": "decoder", "lr": 1e-3, "seed": None}) == \
        ["--epochs", "2", "--mode", "decoder", "--lr", "0.001"]
    for bad, match in (({"name": "x"}, "not a training option"),
                       ({"bogus": 1}, "not a training option"),
                       ({"mode": "everything"}, "Invalid training option"),
                       ({"epochs": "many"}, "Invalid training option"),
                       ({"epochs": 0}, "at least 1 epoch")):
        with pytest.raises(RaysamError, match=match):
            runs.train_argv(bad)


def test_entrypoint_quotes_user_strings():
    nasty = "/data/my set; rm -rf ~ $(reboot)"
    entry = runs.build_entrypoint("python", nasty, ["--model", "a b'c"], "/s/runs", "run-1")
    assert shlex.split(entry)[3] == nasty and shlex.split(entry)[5] == "a b'c"
    with pytest.raises(RaysamError):
        runs.build_entrypoint("python", "/d", [], "/s/runs", "../../etc")


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "", "x/../../y", "run..1", "a\\b"])
def test_path_traversal_in_run_records_is_rejected(dirs, name):
    with pytest.raises(RaysamError, match="Refusing"):
        runs.fetch(_record(name=name), store=dirs["data"])
    assert not dirs["data"].exists()
    index = RunIndex()
    index.path.parent.mkdir(parents=True)
    index.path.write_text(json.dumps({"runs": {"x": {**_record().__dict__, "name": name}}}))
    assert index.list() == []


def test_run_index_concurrent_updates_and_failed_writes(dirs, monkeypatch):
    index = RunIndex()
    threads = [threading.Thread(target=index.put, args=(_record(name=f"run-{i}"),))
               for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(index.list()) == 16
    index.update("run-3", state="RUNNING")
    before = index.path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("napari_raysam.core.paths.json.dump", boom)
    with pytest.raises(OSError):
        index.update("run-3", state="FAILED")
    assert index.path.read_bytes() == before and index.get("run-3").state == "RUNNING"
    assert [p.name for p in index.path.parent.iterdir() if p.name.endswith(".tmp")] == []


# ---- partial fetch of a failed or cancelled run (storage written here, no Ray) ----------------

def _fake_run(storage: Path, name: str, epochs=(1, 2), final: bool = False) -> Path:
    """A run folder as a run leaves it: run.json and checkpoint_epoch_* with state.pt
    (decoder-mode weights of the tiny SAM), and model.pt when it finished."""
    import torch

    from napari_raysam.core.sam import models
    from napari_raysam.core.training.config import TrainConfig
    from napari_raysam.core.training.trainable import setup_mode, trainable_state

    run_dir = storage / "runs" / name
    run_dir.mkdir(parents=True)
    config = TrainConfig(dataset="/d", model="tiny", mode="decoder", name=name)
    (run_dir / "run.json").write_text(json.dumps({"name": name, "config": config.to_dict()}))
    sam = models.build_tiny_sam(models.TinyConfig())
    setup_mode(sam, "decoder")
    for epoch in epochs:
        with torch.no_grad():
            sam.mask_decoder.iou_prediction_head.layers[-1].bias.fill_(float(epoch))
        folder = run_dir / f"checkpoint_epoch_{epoch:04d}"
        folder.mkdir()
        torch.save({"model": trainable_state(sam), "optimizer": {}, "epoch": epoch,
                    "history": [{"epoch": e, "val_miou_box": 0.1 * e} for e in range(1, epoch + 1)],
                    "baseline": {"val_miou_box": 0.05}, "mode": "decoder", "model_spec": "tiny"},
                   folder / "state.pt")
    if final:
        models.save_checkpoint(run_dir / "model.pt", sam, "tiny", models.TinyConfig())
    return run_dir


def test_partial_fetch_takes_the_newest_complete_checkpoint(dirs):
    from napari_raysam.core.sam.models import load_model

    storage = dirs["cache"] / "st"
    run_dir = _fake_run(storage, "run-failed", epochs=(1, 2, 3))
    (run_dir / "checkpoint_epoch_0003" / "state.pt").write_bytes(b"PK\x03\x04 cut")  # torn
    (run_dir / "checkpoint_epoch_0004").mkdir()  # Ray died before it wrote anything
    record = RunIndex().put(_record(name="run-failed", storage=str(storage), state="FAILED"))
    with pytest.raises(RaysamError, match="is FAILED and has no final model.pt") as info:
        runs.fetch(record)
    assert "runs fetch run-failed --partial" in str(info.value)
    model = runs.fetch(record, partial=True)
    assert (model.name, model.partial, model.epoch) == ("run-failed.partial-epoch2", True, 2)
    assert model.metrics["after"]["epoch"] == 2 and model.metrics["before"]
    assert [m.name for m in list_registered_models()] == [model.name]
    loaded = load_model(f"run:{model.name}", device="cpu")  # the Segment dock's spec
    lineage = loaded.lineage
    assert lineage["partial"] is True and lineage["epoch"] == 2
    assert lineage["checkpoint"] == "checkpoint_epoch_0002" and lineage["run_state"] == "FAILED"
    assert float(loaded.sam.mask_decoder.iou_prediction_head.layers[-1].bias[0].detach()) == 2.0
    store = Path(model.path).parent.parent
    assert sorted(p.name for p in store.iterdir() if not p.name.endswith(".lock")) == \
        ["models.json", model.name]  # no temporary folder left
    assert sorted(p.name for p in Path(model.path).parent.iterdir()) == ["model.pt"]
    assert RunIndex().get("run-failed").model_dir is None  # the run has no final model


def test_partial_fetch_error_paths(dirs, capsys):
    from napari_raysam import cli

    storage = dirs["cache"] / "st"
    (storage / "runs" / "run-early").mkdir(parents=True)  # killed before epoch 1 ended
    early = RunIndex().put(_record(name="run-early", storage=str(storage), state="STOPPED",
                                   cancelled=True))
    with pytest.raises(RaysamError, match="was cancelled before its first checkpoint.*no "
                                          "checkpoint_epoch_\\* folder"):
        runs.fetch(early, partial=True)
    _fake_run(storage, "run-torn", epochs=(1,))
    (storage / "runs" / "run-torn" / "checkpoint_epoch_0001" / "state.pt").write_bytes(b"x")
    torn = RunIndex().put(_record(name="run-torn", storage=str(storage), state="FAILED"))
    with pytest.raises(RaysamError, match="None of the 1 checkpoint.*is complete"):
        runs.fetch(torn, partial=True)
    running = RunIndex().put(_record(name="run-going", storage=str(storage), state="RUNNING"))
    with pytest.raises(RaysamError, match="runs cancel run-going"):
        runs.fetch(running, partial=True)
    assert list_registered_models() == []
    # a SUCCEEDED run with --partial: its final model is fetched, under the run's own name
    _fake_run(storage, "run-done", epochs=(1,), final=True)
    RunIndex().put(_record(name="run-done", storage=str(storage), state="SUCCEEDED"))
    assert cli.main(["runs", "fetch", "run-done", "--partial"]) == 0
    assert "fetched that, not a partial checkpoint" in capsys.readouterr().out
    (done,) = list_registered_models()
    assert (done.name, done.partial) == ("run-done", False)
    # the CLI: without --partial one error line naming the fix; with it the partial model
    _fake_run(storage, "run-cut", epochs=(1,))
    RunIndex().put(_record(name="run-cut", storage=str(storage), state="FAILED"))
    assert cli.main(["runs", "fetch", "run-cut"]) == 2
    assert "--partial" in capsys.readouterr().err
    assert cli.main(["runs", "fetch", "run-cut", "--partial"]) == 0
    out = capsys.readouterr().out
    assert "registered run-cut.partial-epoch1 (partial: epoch 1 of the FAILED run" in out
    assert "run:run-cut.partial-epoch1" in out


# ---- against a real head --------------------------------------------------------------------

@pytest.fixture(scope="module")
def head(ray_head):
    return ray_head


@pytest.fixture
def profile(head, dirs):
    return ClusterProfile(name="test", address=head[1].address, storage=str(dirs["cache"] / "st"))


def _raw_job(profile, code: str) -> RunRecord:
    """Submit a trivial python job and record it like submit() would."""
    from napari_raysam.core.training.config import fresh_run_name

    name = fresh_run_name("plumb")
    make_client(profile.address).submit_job(
        entrypoint=shlex.join([sys.executable, "-u", "-c", code]), submission_id=name)
    return RunIndex().put(_record(name=name, storage=profile.storage, profile=profile.name,
                                  address=profile.address))


@pytest.mark.ray
def test_local_head_is_reused_and_loopback_only(head):
    import psutil

    lh, state = head
    t = time.monotonic()
    assert LocalHead(state_file=lh.state_file).start().pid == state.pid
    assert time.monotonic() - t < 3
    procs = [psutil.Process(state.pid), *psutil.Process(state.pid).children(recursive=True)]
    pids = {p.pid for p in procs}
    listening = [c.laddr.ip for c in psutil.net_connections("inet")
                 if c.status == "LISTEN" and c.pid in pids]
    assert listening and all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip in listening)


@pytest.mark.ray
@pytest.mark.parametrize("stream", [True, False], ids=["websocket", "polling"])
def test_follow_parses_events_logs_status_and_replays_once(profile, stream):
    epoch = {"event": "epoch", "epoch": 1, "epochs": 1, "train_loss": 0.5}
    record = _raw_job(profile, f"import json; print('hello'); print(json.dumps({epoch!r}))")
    run_dir = Path(profile.storage) / "runs" / record.name
    append_event(run_dir, {**epoch, "time": "t"})
    events = list(runs.follow(record, poll=0.2, stream=stream))
    kinds = [e["event"] for e in events]
    assert kinds.count("epoch") == 1 and events[0]["event"] == "epoch"
    assert {"event": "log", "run": record.name, "line": "hello"} in events
    assert events[-1]["event"] == "status" and events[-1]["status"] == "SUCCEEDED"
    assert RunIndex().get(record.name).state == "SUCCEEDED"


@pytest.mark.ray
def test_failed_job_records_its_log_tail(profile):
    record = _raw_job(profile, "import sys; print('something broke'); sys.exit(3)")
    last = list(runs.follow(record, poll=0.2))[-1]
    assert last["status"] == "FAILED" and "something broke" in last["log_tail"]
    stored = RunIndex().get(record.name)
    assert stored.state == "FAILED" and "something broke" in stored.log_tail


@pytest.mark.ray
def test_cancel_stops_the_job_and_its_processes(profile):
    import psutil

    record = _raw_job(profile, "import os, time; print('PID', os.getpid()); time.sleep(300)")
    pid = None
    for event in runs.follow(record, poll=0.2):
        if event.get("event") == "log" and event["line"].startswith("PID "):
            pid = int(event["line"].split()[1])
            break
    assert pid and psutil.pid_exists(pid)
    t = time.monotonic()
    stopped = runs.cancel(record)
    assert stopped.state == "STOPPED" and time.monotonic() - t < 15
    assert stopped.cancelled and stopped.partial
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(RaysamError, match="was cancelled"):
        runs.fetch(stopped)


@pytest.fixture
def training_set(tmp_path):
    from napari_raysam.core.dataset import SampleInput, write_dataset
    from napari_raysam.core.dataset.synthetic import make_samples

    samples = make_samples(4, shape=(128, 128))
    return write_dataset(tmp_path / "train set", [SampleInput(s.image, s.labels, f"i{i}")
                                                  for i, s in enumerate(samples)])


@pytest.mark.ray
def test_real_training_run_fetch_register_and_reattach(profile, training_set, dirs):
    from napari_raysam.core.sam.models import load_checkpoint

    record = runs.submit(profile, training_set.path, {"epochs": 1, "workers": 1})
    assert record.dataset_hash == training_set.content_hash
    events = list(runs.follow(record))
    kinds = [e["event"] for e in events]
    assert events[-1].get("status") == "SUCCEEDED", [e for e in events if e["event"] == "log"]
    for kind in ("start", "baseline", "epoch", "end"):
        assert kind in kinds
    model = runs.fetch(RunIndex().get(record.name))
    assert Path(model.path).parent == dirs["data"] / "models" / record.name
    assert model.metrics["after"]["val_miou_box"] is not None
    assert [m.name for m in list_registered_models()] == [record.name]
    load_checkpoint(model.path, device="cpu")
    # re-attach: a new session knows the run from the index and replays its metrics
    again = runs.list_runs()[-1]
    assert again.name == record.name and again.state == "SUCCEEDED" and again.model_dir
    replay = list(runs.follow(again))
    assert [e["event"] for e in replay if e["event"] != "log"].count("epoch") == 1
    assert replay[-1]["status"] == "SUCCEEDED"
    # the same data is not uploaded twice
    assert runs.submit.__module__ and \
        upload_dataset(Storage.open(profile.storage), training_set.path)[2] == 0


@pytest.mark.ray
def test_local_head_runs_one_job_at_a_time(head):
    """Runs submitted back to back queue on the embedded head instead of all starting at once
    (20 concurrent drivers exhausted memory on a 2-core laptop in benchmarks/load.py)."""
    from napari_raysam.core.cluster.local_head import RUN_SLOT
    from napari_raysam.core.training.config import fresh_run_name

    client = make_client(head[1].address)
    names = [fresh_run_name("slot") for _ in range(2)]
    for name in names:
        client.submit_job(entrypoint=shlex.join([sys.executable, "-c",
                                                 "import time; time.sleep(20)"]),
                          submission_id=name, entrypoint_resources={RUN_SLOT: 1})
    deadline = time.monotonic() + 30
    while str(client.get_job_status(names[0]).value) != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    time.sleep(2)
    assert str(client.get_job_status(names[1]).value) == "PENDING"
    for name in names:
        client.stop_job(name)
