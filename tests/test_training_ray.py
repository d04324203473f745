"""End-to-end fine-tuning on a real local Ray cluster (2 CPUs, tiny SAM, synthetic cells).

One ``ray.init`` serves the module; the CLI run trains on "round" cells and its model.pt is
the pretrained model of the "elongated" fine-tune.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from napari_raysam.core.dataset import SampleInput, write_dataset
from napari_raysam.core.dataset.synthetic import make_samples
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.events import read_events
from napari_raysam.core.training.config import TrainConfig
from napari_raysam.core.training.runner import run_training

pytestmark = pytest.mark.ray
FAST = ["--correction-rounds", "1", "--lr", "3e-3", "--steps-per-epoch", "30"]


def _dataset(path: Path, style: str, seed: int, n: int = 8) -> Path:
    samples = make_samples(n, style=style, seed=seed)
    write_dataset(path, [SampleInput(s.image, s.labels, f"{style}{i}")
                         for i, s in enumerate(samples)], val_fraction=0.25, seed=seed)
    return path


@pytest.fixture(scope="module")
def worker_cache(tmp_path_factory):
    """The workers' cache dir (they start before any test's own environment is set)."""
    return tmp_path_factory.mktemp("worker-cache")


@pytest.fixture(scope="module")
def ray_cluster(worker_cache):
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"NAPARI_RAYSAM_CACHE": str(worker_cache)}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def round_run(ray_cluster, tmp_path_factory):
    """`napari-raysam train --json` on 2 workers: (run folder, stdout events)."""
    import contextlib
    import io

    from napari_raysam.cli import main

    root = tmp_path_factory.mktemp("round")
    ds = _dataset(root / "ds", "round", seed=1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["train", str(ds), "--model", "tiny", "--mode", "decoder", "--workers", "2",
                     "--epochs", "4", "--storage", str(root / "runs"), "--json",
                     "--lr-schedule", "plateau",
                     "--normalisation", "percentile", *FAST])
    assert code == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    registered = lines.pop()  # the CLI registers the model after the run's last event
    assert registered["event"] == "registered" and registered["spec"].startswith("run:")
    end = lines[-1]
    assert end["event"] == "end" and end["status"] == "ok"
    assert registered["path"] == end["checkpoint"]
    return Path(end["checkpoint"]).parent, lines, ds


def test_cli_run_learns_and_writes_outputs(round_run, worker_cache):
    run_dir, lines, _ = round_run
    kinds = [e["event"] for e in lines]
    assert kinds[0] == "start" and kinds[1] == "baseline" and kinds.count("epoch") == 4
    epoch = next(e for e in lines if e["event"] == "epoch")
    for key in ("epoch", "train_loss", "val_loss", "val_miou_point", "val_miou_box",
                "val_miou_corrected", "epoch_time_s", "objects_per_s", "eta_s", "lr"):
        assert key in epoch
    # the job's ETA: measured from its first steps, streamed before the first epoch ends
    progress = [e for e in lines if e["event"] == "progress"]
    assert progress and kinds.index("progress") < kinds.index("epoch")
    assert progress[0]["epoch"] == 1 and progress[0]["step"] == 3 and progress[0]["steps"] == 30
    assert progress[0]["epochs"] == 4 and progress[0]["eta_s"] > 0
    etas = [e["eta_s"] for e in lines if e["event"] == "epoch"]
    assert etas[0] > 0 and etas[-1] == 0
    for name in ("model.pt", "report.json", "curves.png", "run.json"):
        assert (run_dir / name).is_file(), name
    assert len(list((run_dir / "events").glob("*.json"))) == len(kinds)
    assert [e["event"] for e in read_events(run_dir)] == kinds
    rep = json.loads((run_dir / "report.json").read_text())
    gain = rep["after"]["val_miou_point"] - rep["before"]["val_miou_point"]
    assert gain > 0.1, rep["summary"]
    assert rep["verdict"] == "improved"
    # one score decides: model.pt is the epoch with the best val box mIoU, and says so
    from napari_raysam.core.training.report import best_epoch

    assert rep["best_metric"] == "val_miou_box"
    assert rep["best_epoch"] == best_epoch(rep["history"])
    assert f"epoch {rep['best_epoch']} of 4" in rep["returned"]
    assert rep["after"]["val_miou_box"] == max(h["val_miou_box"] for h in rep["history"])
    assert lines[-1]["returned"] == rep["returned"] and lines[-1]["verdict"] == "improved"
    from napari_raysam.core.sam.models import load_model

    model = load_model(str(run_dir / "model.pt"), device="cpu")
    assert model.model_type == "tiny"
    assert model.lineage["dataset_content_hash"] == rep["dataset_content_hash"]
    assert [m["epoch"] for m in model.lineage["metrics"]] == [1, 2, 3, 4]
    assert model.lineage["versions"]["torch"]
    # trained with the chosen scaling (the base, tiny, has min-max) and records it
    assert model.normalisation["scaling"] == "percentile"
    assert model.lineage["config"]["normalisation"] == "percentile"
    # decoder mode: the encoder is untouched, so cached embeddings stay valid
    assert model.encoder_fingerprint == load_model("tiny", device="cpu").encoder_fingerprint
    cached = list((worker_cache / "node" / "embeddings").rglob("*.pt"))  # on the node, not runs
    assert cached and all("-percentile-" in p.parent.name for p in cached)
    assert not (run_dir / "embeddings").exists()


def test_finetune_round_model_on_elongated_cells(round_run, tmp_path):
    run_dir, _, _ = round_run
    ds = _dataset(tmp_path / "elong", "elongated", seed=5)
    cfg = TrainConfig(dataset=str(ds), model=str(run_dir / "model.pt"), mode="decoder",
                      workers=2, epochs=3, lr=3e-3, correction_rounds=1, steps_per_epoch=30,
                      storage=str(tmp_path / "runs"), patience=1)
    out = run_training(cfg, log_to_driver=False)
    gain = out.after["val_miou_point"] - out.before["val_miou_point"]
    assert gain > 0.05, (out.before, out.after)
    from napari_raysam.core.training.report import best_epoch, should_stop

    # patience 1: the run ends after the first epoch without a better val box mIoU
    epochs = [h["epoch"] for h in out.history]
    stopped = bool(out.facts["stopped_early"])
    assert stopped == (epochs != [1, 2, 3]), out.history
    assert all(not should_stop(out.history[:i], 1) for i in range(1, len(epochs)))
    assert out.best_epoch == best_epoch(out.history)

    from napari_raysam.core.sam.models import load_model

    # no --normalisation: the fine-tune keeps its base model's scaling
    assert load_model(out.checkpoint, device="cpu").normalisation["scaling"] == "percentile"


def test_killed_worker_resumes_without_double_counting(ray_cluster, tmp_path):
    ds = _dataset(tmp_path / "ds", "round", seed=2, n=6)
    pid_dir = tmp_path / "pids"
    cfg = TrainConfig(dataset=str(ds), mode="decoder", workers=2, epochs=3, lr=3e-3,
                      correction_rounds=1, steps_per_epoch=8, eval_objects=8,
                      storage=str(tmp_path / "runs"), name="killme", debug_pid_dir=str(pid_dir),
                      debug_pause_s=4.0, lr_scaling="sqrt")
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("out", run_training(cfg)))
    thread.start()
    deadline = time.time() + 240
    while time.time() < deadline and not (pid_dir.exists() and any(pid_dir.iterdir())):
        time.sleep(0.2)
    pid_file = next(pid_dir.iterdir())
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    thread.join(timeout=400)
    out = box["out"]
    assert [h["epoch"] for h in out.history] == [1, 2, 3]
    evs = read_events(out.run_dir)
    assert [e["epoch"] for e in evs if e["event"] == "epoch"] == [1, 2, 3]
    assert any(e["event"] == "resume" for e in evs), [e["event"] for e in evs]
    assert len(list(pid_dir.iterdir())) >= 2  # epoch 2 ran again in a new worker
    # lr x sqrt(2 workers), before and after the resume (the optimizer's state carries it)
    assert [h["lr"] for h in out.history] == pytest.approx([3e-3 * 2 ** 0.5] * 3)


def test_a_set_without_a_val_split_trains_and_says_there_is_no_measure(ray_cluster, tmp_path):
    from napari_raysam.core.training.report import NO_VAL

    ds = _dataset(tmp_path / "one", "round", seed=4, n=1)
    events = []
    cfg = TrainConfig(dataset=str(ds), mode="decoder", workers=1, epochs=2, lr=3e-3,
                      correction_rounds=1, steps_per_epoch=3, storage=str(tmp_path / "runs"))
    out = run_training(cfg, on_event=events.append, log_to_driver=False)
    assert out.best_epoch == 2 and [h["epoch"] for h in out.history] == [1, 2]  # the last
    kinds = [e["event"] for e in events]
    assert "baseline" not in kinds and kinds.count("epoch") == 2
    assert events[0]["validated"] is False and events[0]["warning"] == NO_VAL
    assert all("val_miou_box" not in e for e in events if e["event"] == "epoch")
    report = json.loads((Path(out.run_dir) / "report.json").read_text())
    assert report["verdict"] == "no val split" and report["summary"] == NO_VAL
    from napari_raysam.core.sam.models import load_model

    assert load_model(out.checkpoint, device="cpu").lineage["best_epoch"] == 2


def test_more_workers_than_cpus_is_refused(ray_cluster, tmp_path):
    ds = _dataset(tmp_path / "ds", "round", seed=3, n=3)
    cfg = TrainConfig(dataset=str(ds), workers=5, storage=str(tmp_path / "runs"))
    with pytest.raises(RaysamError, match=r"cluster has 2 CPU"):
        run_training(cfg)
    cfg = TrainConfig(dataset=str(ds), workers=1, gpus_per_worker=1, storage=str(tmp_path / "r"))
    with pytest.raises(RaysamError, match=r"0 GPU"):
        run_training(cfg)


@pytest.mark.parametrize("mode", ["decoder", "lora", "full"])
def test_each_mode_trains_and_its_model_loads_and_evaluates(ray_cluster, tmp_path, mode):
    """Every mode through the job path on 2 workers (validation runs the fused encoder on the
    mode's model, which broke LoRA once); model.pt is a plain SAM that loads and evaluates."""
    from napari_raysam.core.sam.evaluate import evaluate_model
    from napari_raysam.core.sam.models import load_model

    ds = _dataset(tmp_path / "ds", "elongated", seed=6, n=4)
    cfg = TrainConfig(dataset=str(ds), model="tiny_cells", mode=mode, workers=2, epochs=2,
                      lr=3e-3, correction_rounds=1, steps_per_epoch=4, eval_objects=8,
                      storage=str(tmp_path / "runs"))
    out = run_training(cfg, log_to_driver=False)
    assert [h["epoch"] for h in out.history] == [1, 2]
    model = load_model(out.checkpoint, device="cpu")
    assert model.lineage["mode"] == mode
    base = load_model("tiny_cells", device="cpu")
    assert (model.encoder_fingerprint == base.encoder_fingerprint) == (mode == "decoder")
    assert all(type(b.attn.qkv) is torch.nn.Linear for b in model.sam.image_encoder.blocks)
    result = evaluate_model(model, str(ds), rounds=1, max_objects=8)
    assert result["objects"] > 0
    assert all(0.0 <= result[m] <= 1.0 for m in ("miou_point", "miou_box", "miou_corrected"))
