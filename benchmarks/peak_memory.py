"""Peak memory: RSS of each training worker (decoder and full mode) and of napari following a run.

    python benchmarks/peak_memory.py [--smoke] [--steps N]

Worker section: a random-weight vit_b saved as a checkpoint file (``tiny`` in --smoke) is
fine-tuned the way the Train dock sends a run: ``runs.submit`` to the embedded LocalHead on
127.0.0.1 (Jobs API, ``python -m napari_raysam.train``), 1 worker with 2 CPUs, 1 epoch of
``--steps`` optimizer steps (default 1) of 1 image tile each (1024 px for vit_b), 8 objects x
(1 + 3 correction rounds), then the epoch's validation, checkpoint and model.pt. Training set:
2 synthetic 512 px images (1 train, 1 val). While it runs, every process under the head is
polled for its kernel-kept high-water mark (``VmHWM`` in /proc: the real peak RSS, however
short) -- so this is the actual Ray Train worker running ``train_loop_per_worker``, not a copy.

napari section (first, in this process): a shown napari viewer under Xvfb, the Train dock's own
``start()`` of a tiny run, following it (log and epoch stream, plot, fetch) to the end; the
process's RSS before, and its peak (``ru_maxrss``) afterwards.

Heads are stopped with ``LocalHead.stop()`` (by PID). The last line is ``RATIO ...`` (MB).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    PeakMonitor,
    headless,
    isolate,
    peak_self_mb,
    rss_mb,
    synthetic_set,
    wait_until,
)
from _timing import machine, table  # noqa: E402

ROWS: list[list] = []


def napari_follow(root: Path, head, dataset: Path, epochs: int) -> None:
    """The napari process's RSS while the Train dock runs and follows a tiny run."""
    import napari

    from napari_raysam._qt.train_widget import TrainWidget
    from napari_raysam.core.dataset.synthetic import make_sample

    with headless():
        viewer = napari.Viewer(show=True)
        viewer.add_image(make_sample((512, 512), seed=7).image, name="cells")
        dock = TrainWidget(viewer, head=head)
        viewer.window.add_dock_widget(dock, name="Train")
        dock.storage_edit.setText(str(root / "storage"))
        dock.dataset_edit.setText(str(dataset))
        dock.model_edit.setText("tiny")
        dock.epochs.setValue(epochs)
        wait_until(lambda: False, 2.0)
        before, peak_before = rss_mb(), peak_self_mb()
        samples: list[float] = []
        from qtpy.QtCore import QTimer

        sampler = QTimer()
        sampler.timeout.connect(lambda: samples.append(rss_mb()))
        sampler.start(250)
        t0 = time.perf_counter()
        dock.start()
        ok = wait_until(lambda: dock.model is not None or any(
            w in dock.status.text() for w in ("FAILED", "STOPPED")), 900.0)
        took = time.perf_counter() - t0
        sampler.stop()
        assert ok and dock.model is not None, dock.status.text()
        ROWS.append(["napari", f"Train dock follows tiny {epochs} epochs ({took:.0f} s)",
                     "napari (this process)", "RSS before start", round(before)])
        ROWS.append(["napari", "", "napari (this process)", "max sampled RSS while following",
                     round(max(samples))])
        ROWS.append(["napari", "", "napari (this process)", "peak RSS (ru_maxrss) at end",
                     round(peak_self_mb())])
        ROWS.append(["napari", "", "napari (this process)", "ru_maxrss before start",
                     round(peak_before)])
        viewer.close()


def worker_run(head, profile, dataset: Path, model: str, mode: str, steps: int,
               timeout: float) -> None:
    from napari_raysam.core import runs
    from napari_raysam.core.runs.records import TERMINAL

    options = {"model": model, "mode": mode, "epochs": 1, "workers": 1, "cpus_per_worker": 2,
               "gpus_per_worker": 0.0, "lr": 1e-4, "objects_per_image": 8,
               "steps_per_epoch": steps}
    monitor = PeakMonitor(head.status().pid, interval=0.1)
    monitor.start()
    t0 = time.perf_counter()
    status = None
    try:
        record = runs.submit(profile, dataset, options, head=head)
        for event in runs.follow(record, replay=True, poll=0.5, head=head):
            if event.get("event") == "status":
                status = event["status"]
                if status in TERMINAL:
                    break
            if time.perf_counter() - t0 > timeout:
                runs.cancel(record, head=head)
                status = f"cancelled after {timeout:.0f} s"
                break
    finally:
        time.sleep(0.5)
        peaks = monitor.stop()
    took = time.perf_counter() - t0
    epochs = [e for e in runs.history(record) if e.get("event") == "epoch"]
    if status != "SUCCEEDED" or not epochs:
        tail = (runs.list_runs()[-1].log_tail or "")[-2000:]
        print(f"  {mode}: run {status}; log tail:\n{tail}", flush=True)
    epoch_s = float(epochs[0]["epoch_time_s"]) if epochs else float("nan")
    label = (f"{Path(model).stem if '/' in model else model} {mode}, {steps} step(s), "
             f"{status} in {took:.0f} s (epoch {epoch_s:.0f} s)")
    order = ("TrainWorker", "job driver", "TrainController", "JobSupervisor")
    for name in order:
        # (the /bin/sh wrapper of the job's command line is a few MB: left out)
        for mb in sorted((mb for r, mb in peaks.values() if r == name and mb > 20),
                         reverse=True):
            ROWS.append(["worker", label, name, "peak RSS (VmHWM)", round(mb)])
            label = ""
    print(f"  {mode}: {status}, {took:.0f} s; peaks "
          + ", ".join(f"{r} {mb:.0f} MB" for r, mb in peaks.values() if r in order and mb > 20),
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model instead of vit_b")
    parser.add_argument("--steps", type=int, default=1, help="optimizer steps per mode")
    parser.add_argument("--modes", nargs="*", default=["decoder", "full"])
    parser.add_argument("--no-napari", action="store_true", help="skip the napari section")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    args = parser.parse_args()
    root = isolate("raysam-mem-")
    print(f"machine: {machine()}; {'smoke' if args.smoke else 'full'}", flush=True)

    from napari_raysam.core.cluster import ClusterProfile
    from napari_raysam.core.cluster.local_head import LocalHead

    head = LocalHead(state_file=root / "head.json", num_cpus=2)
    profile = ClusterProfile(storage=str(root / "storage"))
    try:
        head.start()
        if not args.no_napari:
            small = synthetic_set(root / "small", n=3, shape=(128, 128)).path
            napari_follow(root, head, small, 3 if args.smoke else 10)
        dataset = synthetic_set(root / "set", n=2, shape=(512, 512)).path
        if args.smoke:
            model = "tiny"
        else:
            import torch

            from napari_raysam.core.sam.models import build_standard_sam, save_checkpoint

            torch.manual_seed(0)
            model = str(save_checkpoint(root / "vit_b_random.pt", build_standard_sam("vit_b"),
                                        "vit_b"))
        for mode in args.modes:
            worker_run(head, profile, dataset, model, mode, args.steps, args.timeout)
    finally:
        head.stop()
        shutil.rmtree(root, ignore_errors=True)
    print("\npeak resident memory (MB); worker rows: each process's VmHWM polled every 0.1 s")
    print(table(["section", "run", "process", "measure", "MB"], ROWS))
    worker = {}
    mode_of = None
    for r in ROWS:
        if r[0] == "worker" and r[1]:
            mode_of = "full" if " full," in r[1] else "decoder"
        if r[0] == "worker" and r[2] == "TrainWorker":
            worker[mode_of] = max(worker.get(mode_of, 0.0), r[4])
    napari_peak = next((r[4] for r in ROWS if r[3].startswith("peak RSS (ru_maxrss)")), None)
    parts = [f"worker_peak_mb_{m}={v:.0f}" for m, v in worker.items()]
    if napari_peak is not None:
        parts.append(f"napari_peak_mb={napari_peak:.0f}")
    print("RATIO " + " ".join(parts))


if __name__ == "__main__":
    main()
