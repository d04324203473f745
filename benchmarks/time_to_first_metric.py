"""Time to first metric: from "start" to the first epoch event of a training run.

    python benchmarks/time_to_first_metric.py [--smoke] [--warm N] [--cold N]

The run goes the way the Train dock and ``napari-raysam train`` send it: ``runs.submit`` (upload
the training set, Jobs API submit of ``python -m napari_raysam.train`` with ``py_modules``) to
the embedded LocalHead on 127.0.0.1, then ``runs.follow`` (what the dock streams) until the
first ``epoch`` event. *warm*: the head is already running (it served a run before); *cold*:
the clock starts before ``LocalHead.start()``. Model ``tiny``, decoder mode, 1 worker, 1 epoch,
3 synthetic 128 px images (2 train, 1 val) written with ``write_dataset``. The first epoch's
own duration (``epoch_time_s`` in the run's metrics events: train steps + validation) shows how
much of the wait is one epoch and how much is set-up. Heads are stopped with
``LocalHead.stop()`` (by PID), nothing else. The last line is ``RATIO ...`` (seconds).

*floor*: on the same warm head, a job whose ``TorchTrainer`` (same worker count and CPUs) runs
a loop that only records the time it was entered: what the Jobs API plus Ray Train cost before
any of our code runs. ``setup_over_floor`` = our warm set-up (first epoch minus its own
duration) over that floor.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import isolate, synthetic_set  # noqa: E402
from _timing import machine, table  # noqa: E402

#: What the Train dock's form sends with its defaults (TrainWidget.options), 1 epoch.
OPTIONS = {"model": "tiny", "mode": "decoder", "epochs": 1, "workers": 1,
           "gpus_per_worker": 0.0, "lr": 1e-4, "objects_per_image": 8}
MARKS = ("head ready", "submitted", "RUNNING", "start", "baseline", "epoch", "ended")


def timed_run(head, profile, dataset: Path, cold: bool, timeout: float) -> dict:
    """One run; seconds from t0 to each milestone, plus the first epoch's own duration."""
    from napari_raysam.core import runs
    from napari_raysam.core.runs.records import TERMINAL

    t0 = time.perf_counter()
    if cold:
        head.start()
    marks = {"head ready": time.perf_counter() - t0 if cold else 0.0}
    record = runs.submit(profile, dataset, OPTIONS, head=head)
    marks["submitted"] = time.perf_counter() - t0
    status = None
    for event in runs.follow(record, replay=True, poll=0.5, head=head):  # as the dock does
        now = time.perf_counter() - t0
        kind = event.get("event")
        if kind in ("start", "baseline", "epoch"):
            marks.setdefault(kind, now)
        elif kind == "status":
            status = event["status"]
            marks.setdefault(status, now)
            if status in TERMINAL:
                marks["ended"] = now
                break
        elif kind == "error":
            raise RuntimeError(event["message"])
        if now > timeout:
            runs.cancel(record, head=head)
            raise RuntimeError(f"run {record.name} took over {timeout:.0f} s")
    epochs = [e for e in runs.history(record) if e.get("event") == "epoch"]
    if status != "SUCCEEDED" or not epochs:
        raise RuntimeError(f"run {record.name} ended {status}: "
                           f"{(runs.list_runs()[-1].log_tail or '')[-1500:]}")
    marks["epoch_time_s"] = float(epochs[0]["epoch_time_s"])
    return marks


FLOOR_JOB = """
import json, sys, time
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
out, storage, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
def loop(_):
    open(out, "a").write(json.dumps({"entered": time.time()}) + "\\n")
TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=workers,
             resources_per_worker={"CPU": 1}),
             run_config=RunConfig(storage_path=storage, name=f"floor-{time.time_ns()}")).fit()
"""


def floor_run(head, profile, root: Path, timeout: float) -> dict:
    """A no-op TorchTrainer job on the warm head: seconds from submit to the loop's entry
    (the first worker in) and to the job's end."""
    from ray.job_submission import JobStatus

    from napari_raysam.core.runs.submit import open_cluster

    client, _ = open_cluster(profile, head)
    marks = root / f"floor-{time.time_ns()}.jsonl"
    entry = shlex.join([sys.executable, "-c", FLOOR_JOB, str(marks), str(root / "floor"),
                        str(OPTIONS["workers"])])
    t0 = time.time()
    job = client.submit_job(entrypoint=entry)
    while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                              JobStatus.STOPPED):
        if time.time() - t0 > timeout:
            client.stop_job(job)
            raise RuntimeError("the floor job took over the timeout")
        time.sleep(0.2)
    ended = time.time() - t0
    if client.get_job_status(job) != JobStatus.SUCCEEDED or not marks.exists():
        raise RuntimeError(f"the floor job failed: {client.get_job_logs(job)[-1500:]}")
    entered = min(json.loads(line)["entered"] for line in marks.read_text().splitlines())
    return {"entered": entered - t0, "ended": ended}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1 cold + 1 warm run")
    parser.add_argument("--warm", type=int, default=None, help="warm runs (default 3)")
    parser.add_argument("--cold", type=int, default=None, help="cold runs (default 2)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    args = parser.parse_args()
    n_warm = args.warm or (1 if args.smoke else 3)
    n_cold = args.cold or (1 if args.smoke else 2)
    root = isolate("raysam-ttfm-")
    print(f"machine: {machine()}; {n_cold} cold + {n_warm} warm runs; options {OPTIONS}",
          flush=True)

    from napari_raysam.core.cluster import ClusterProfile
    from napari_raysam.core.cluster.local_head import LocalHead

    dataset = synthetic_set(root / "set", n=3, shape=(128, 128)).path
    profile = ClusterProfile(storage=str(root / "storage"))  # the embedded local profile
    head = LocalHead(state_file=root / "head.json", num_cpus=2)
    results: list[tuple[str, dict]] = []
    floors: list[dict] = []
    try:
        for i in range(n_cold):
            head.stop()  # only the head this script started (by its recorded PID)
            results.append((f"cold {i + 1}", timed_run(head, profile, dataset, True,
                                                       args.timeout)))
            print(f"  cold {i + 1}: {results[-1][1]}", flush=True)
        for i in range(n_warm):
            results.append((f"warm {i + 1}", timed_run(head, profile, dataset, False,
                                                       args.timeout)))
            print(f"  warm {i + 1}: {results[-1][1]}", flush=True)
            floors.append(floor_run(head, profile, root, args.timeout))
            print(f"  floor {i + 1}: {floors[-1]}", flush=True)
    finally:
        head.stop()
        shutil.rmtree(root, ignore_errors=True)

    rows = [[name, *[m.get(k, float("nan")) for k in MARKS], m["epoch_time_s"],
             m["epoch"] - m["epoch_time_s"]] for name, m in results]
    print("\nseconds from t0 (cold: before LocalHead.start; warm: before runs.submit) to each "
          "milestone seen by runs.follow;\nepoch_time_s = the first epoch's own duration from "
          "metrics.jsonl; set-up = first epoch - epoch_time_s")
    print(table(["run", *MARKS, "epoch_time_s", "set-up"], rows))
    warm = statistics.median(m["epoch"] for n, m in results if n.startswith("warm"))
    cold = statistics.median(m["epoch"] for n, m in results if n.startswith("cold"))
    head_s = statistics.median(m["head ready"] for n, m in results if n.startswith("cold"))
    first = statistics.median(m["epoch_time_s"] for _, m in results)
    floor = statistics.median(f["entered"] for f in floors)
    setup = statistics.median(m["epoch"] - m["epoch_time_s"] for n, m in results
                              if n.startswith("warm"))
    ended = statistics.median(f["ended"] for f in floors)
    print(f"floor (no-op TorchTrainer job, {OPTIONS['workers']} worker(s)): submit -> loop "
          f"entered, median {floor:.1f} s; job ended {ended:.1f} s")
    print(f"RATIO time_to_first_metric_warm_s={warm:.1f} time_to_first_metric_cold_s={cold:.1f} "
          f"head_start_s={head_s:.1f} first_epoch_s={first:.2f} "
          f"warm_setup_share={(warm - first) / warm:.2f} ray_train_floor_s={floor:.1f} "
          f"setup_over_floor={setup / floor:.2f}")


if __name__ == "__main__":
    main()
