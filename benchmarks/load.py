"""Load benchmark: a big export + upload + one-epoch run, back-to-back runs, a long Segment session.

    python benchmarks/load.py [--smoke] [--export] [--runs] [--prompts [--cycles N] [--trace]]

With no section flag all three run. ``--smoke`` shrinks every section (20 images, 3 runs,
100 prompt cycles). The prompts section runs its session twice, each in a child process: with
the plugin's ``gc.freeze`` and without it (``NAPARI_RAYSAM_GC_FREEZE=0``); target < 50 MB RSS
growth over 1,000 cycles; ``--trace`` lists tracemalloc's top growth sites. Most of the growth
is napari's Labels undo history, which keeps the changed indices and old values of the last 100
commits: with random-weight ``tiny`` masks (most of the image) that was ~4 MB a commit with
int64 indices (the old +415 MB); commits now store int16 indices (~1.6 MB a commit there).
Everything is written under a temporary folder (caches, settings, run
index, model store, storage); a LocalHead on 127.0.0.1 serves ``--runs`` and is stopped by PID.
The Segment-dock section runs under a virtual display (pyvirtualdisplay / Xvfb).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, table  # noqa: E402

ROWS: list[list] = []


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # Linux: KiB


def row(section: str, what: str, value, unit: str) -> None:
    ROWS.append([section, what, value, unit])
    print(f"  {section}: {what} = {value if not isinstance(value, float) else f'{value:.3g}'} "
          f"{unit}", flush=True)


def export_upload_train(root: Path, n: int, size: int) -> None:
    from napari_raysam.core.dataset import SampleInput, validate_dataset, write_dataset
    from napari_raysam.core.dataset.synthetic import make_sample
    from napari_raysam.core.storage import Storage
    from napari_raysam.core.training.config import TrainConfig
    from napari_raysam.core.training.runner import run_training

    t = time.perf_counter()
    inputs = [SampleInput(s.image, s.labels, f"img{i}")
              for i, s in enumerate(make_sample((size, size), seed=i) for i in range(n))]
    row("export", f"generate {n} x {size} px", time.perf_counter() - t, "s")
    samples: list[float] = []
    rss0 = rss_mb()
    t = time.perf_counter()
    ts = write_dataset(root / "big set", inputs, progress=lambda k, _n: samples.append(rss_mb()))
    row("export", "write_dataset", time.perf_counter() - t, "s")
    row("export", "RSS before / after first image", f"{rss0:.0f} / {samples[0]:.0f}", "MB")
    row("export", "RSS growth first -> last image", samples[-1] - samples[0], "MB")
    row("export", "peak RSS of the process", peak_mb(), "MB")
    t = time.perf_counter()
    report = validate_dataset(ts.path)
    row("export", "validate (hashes)", time.perf_counter() - t, "s")
    assert report.ok, report.text()
    del inputs
    from napari_raysam.core.dataset.upload import upload_dataset

    storage = Storage.open(str(root / "storage"))
    t = time.perf_counter()
    _, _, uploaded, skipped = upload_dataset(storage, ts.path)
    row("upload", f"upload {uploaded} files", time.perf_counter() - t, "s")
    t = time.perf_counter()
    _, _, uploaded, skipped = upload_dataset(storage, ts.path)
    row("upload", f"re-upload (skipped {skipped})", time.perf_counter() - t, "s")
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        t = time.perf_counter()
        out = run_training(TrainConfig(dataset=str(ts.path), model="tiny", mode="decoder",
                                       workers=1, epochs=1, lr=3e-3, correction_rounds=1,
                                       eval_objects=16, storage=str(root / "storage" / "runs")),
                           log_to_driver=False)
        row("train", f"1 epoch decoder, 1 worker, {len(ts.split('train'))} train images",
            time.perf_counter() - t, "s")
        row("train", "val box mIoU before -> after",
            f"{out.before['val_miou_box']:.3f} -> {out.after['val_miou_box']:.3f}", "")
    finally:
        ray.shutdown()
    row("export", "peak RSS incl. training driver", peak_mb(), "MB")


def back_to_back_runs(root: Path, n_runs: int) -> None:
    from napari_raysam.core import runs
    from napari_raysam.core.cluster import ClusterProfile
    from napari_raysam.core.cluster.local_head import LocalHead
    from napari_raysam.core.dataset import SampleInput, write_dataset
    from napari_raysam.core.dataset.synthetic import make_sample
    from napari_raysam.core.model_store import list_registered_models
    from napari_raysam.core.runs.records import RunIndex

    ts = write_dataset(root / "two", [SampleInput(make_sample((96, 96), seed=s).image,
                                                  make_sample((96, 96), seed=s).labels, f"s{s}")
                                      for s in (1, 2)])
    head = LocalHead(state_file=root / "h.json", num_cpus=2)
    t = time.perf_counter()
    head.start()
    row("runs", "LocalHead start", time.perf_counter() - t, "s")
    try:
        profile = ClusterProfile(storage=str(root / "run storage"))  # the embedded local head
        t = time.perf_counter()
        records = [runs.submit(profile, ts.path, {"epochs": 1, "workers": 1, "lr": 3e-3},
                               head=head) for _ in range(n_runs)]
        row("runs", f"submit {n_runs} runs back to back", time.perf_counter() - t, "s")
        states = {}
        for record in records:
            last = list(runs.follow(record, replay=False, poll=1.0, head=head))[-1]
            states[record.name] = last.get("status", last.get("event"))
        row("runs", f"all {n_runs} runs ended", time.perf_counter() - t, "s")
        index = RunIndex().list()
        ok = sorted(r.name for r in index if r.state == "SUCCEEDED")
        consistent = len(index) == n_runs and len({r.name for r in index}) == n_runs \
            and all(RunIndex().get(n).state == s for n, s in states.items())
        row("runs", "index records / SUCCEEDED / consistent",
            f"{len(index)} / {len(ok)} / {consistent}", "")
        for r in index:
            if r.state != "SUCCEEDED":
                tail = " | ".join((r.log_tail or "").strip().splitlines()[-6:])
                print(f"  run {r.name} {r.state}: {r.message} :: {tail[-1500:]}", flush=True)
        t = time.perf_counter()
        fetched = [runs.fetch(RunIndex().get(name)).name for name in ok]
        row("runs", f"fetch {len(fetched)} models", time.perf_counter() - t, "s")
        row("runs", "registered models", len(list_registered_models()), "")
    finally:
        head.stop()


def prompt_session(root: Path, cycles: int, trace: bool = False, model: str = "tiny_cells"
                   ) -> None:
    """The long Segment session twice, side by side: with the plugin's ``gc.freeze`` and with
    it switched off (``NAPARI_RAYSAM_GC_FREEZE=0``), each in a fresh child process (a process
    that froze its heap once is not a clean baseline)."""
    import json
    import subprocess

    for freeze in ("1", "0"):
        env = {**os.environ, "NAPARI_RAYSAM_GC_FREEZE": freeze}
        cmd = [sys.executable, __file__, "--prompt-child", str(cycles), "--root",
               str(root / f"prompts-{freeze}"), "--model", model] + (["--trace"] if trace else [])
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        tag = f"prompts {model}, gc.freeze {'on' if freeze == '1' else 'off'}"
        lines = done.stdout.splitlines()
        rows = [json.loads(line[5:]) for line in lines if line.startswith("ROWS ")]
        for line in lines:
            if not line.startswith("ROWS "):
                print(f"  [{tag}] {line}", flush=True)
        if done.returncode or not rows:
            print(done.stderr[-3000:], flush=True)
            raise SystemExit(f"{tag}: the child process failed ({done.returncode})")
        for what, value, unit in rows[-1]:
            row(tag, what, value, unit)


def _prompt_child(root: Path, cycles: int, trace: bool, model: str) -> None:
    import json

    from pyvirtualdisplay import Display

    root.mkdir(parents=True, exist_ok=True)
    with Display(visible=False, size=(1280, 1024)):
        rows = _prompt_cycles(root, cycles, trace, model)
    print("ROWS " + json.dumps(rows), flush=True)


def _prompt_cycles(root: Path, cycles: int, trace: bool, model: str) -> list:
    import gc

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_raysam._qt.segment_widget import SegmentWidget
    from napari_raysam.core.dataset.synthetic import make_sample
    from napari_raysam.core.sam.embeddings import EmbeddingCache

    viewer = napari.Viewer(show=False)
    sample = make_sample((512, 512), seed=7)
    viewer.add_image(sample.image, name="cells")
    widget = SegmentWidget(viewer, cache=EmbeddingCache(root / "emb"))
    widget.model_combo.setCurrentText(model)
    app = QApplication.instance()
    widget.compute_embedding()
    while widget.busy:
        app.processEvents()
        time.sleep(0.01)
    assert widget.embeddings is not None, widget.status.text()
    rng = np.random.default_rng(0)

    def cycle():
        r, c = rng.uniform(20, 490, 2)
        widget.prompts.add_point(r, c)
        widget.prompts.add_point(r + 3, c + 3)
        widget.commit()
        app.processEvents()

    for _ in range(20):  # warm-up: layers created, caches filled
        cycle()
    objects = viewer.layers["cells objects"]
    gc.collect()
    if trace:
        import tracemalloc

        tracemalloc.start(12)
        snap0 = tracemalloc.take_snapshot()
    before = rss_mb()
    t = time.perf_counter()
    marks = []
    for k in range(1, cycles + 1):
        cycle()
        if k % max(cycles // 5, 1) == 0:
            marks.append(f"{k}:{rss_mb():.0f}")
    took = time.perf_counter() - t
    gc.collect()
    after = rss_mb()
    if trace:
        top = tracemalloc.take_snapshot().compare_to(snap0, "traceback")[:8]
        print(f"tracemalloc: traced growth {sum(d.size_diff for d in top) / 1e6:.1f} MB in the "
              "top 8 sites", flush=True)
        for diff in top:
            frames = " <- ".join(f"{f.filename.split('site-packages/')[-1]}:{f.lineno}"
                                 for f in list(diff.traceback)[::-1][:4])
            print(f"  {diff.size_diff / 1e6:+.2f} MB ({diff.count_diff:+d} blocks) {frames}")
    rows = [[f"{cycles} prompt/commit cycles", took, "s"],
            ["per cycle (2 points + commit)", took / cycles * 1e3, "ms"],
            ["RSS before -> after", f"{before:.0f} -> {after:.0f}", "MB"],
            ["RSS growth", after - before, "MB"],
            ["RSS growth per cycle", (after - before) / cycles * 1e3, "kB"],
            ["RSS at cycle k (k:MB)", " ".join(marks), ""],
            ["gc.freeze count (frozen objects)", gc.get_freeze_count(), ""],
            ["objects committed / undo history", f"{int(objects.data.max())} / "
             f"{len(objects._undo_history)}", ""],
            ["mean mask (pixels of 512 x 512)", (objects.data > 0).sum() / max(
                int(objects.data.max()), 1), "px"]]
    viewer.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes for a fast check")
    for name in ("export", "runs", "prompts"):
        parser.add_argument(f"--{name}", action="store_true")
    parser.add_argument("--cycles", type=int, help="prompt/commit cycles (default 1000)")
    parser.add_argument("--trace", action="store_true",
                        help="tracemalloc's top growth sites over the prompt cycles")
    parser.add_argument("--model", default="tiny_cells",
                        help="the Segment dock's model for the prompts section (tiny_cells: "
                        "the shipped cell model; tiny: random weights, masks over most of "
                        "the image, the worst case for napari's undo history)")
    parser.add_argument("--prompt-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prompt_child:  # one side of the prompts section, in its own process
        return _prompt_child(args.root, args.prompt_child, args.trace, args.model)
    chosen = [n for n in ("export", "runs", "prompts") if getattr(args, n)] or \
        ["export", "runs", "prompts"]
    root = Path(tempfile.mkdtemp(prefix="raysam-load-"))
    for key in ("CACHE", "CONFIG", "DATA"):
        os.environ[f"NAPARI_RAYSAM_{key}"] = str(root / key.lower())
    os.environ.pop("RAY_ADDRESS", None)
    n_images, n_runs, cycles = (20, 3, 100) if args.smoke else (200, 20, 1000)
    cycles = args.cycles or cycles
    print(f"machine: {machine()}; sections {chosen}; {'smoke' if args.smoke else 'full'}")
    t = time.perf_counter()
    try:
        if "export" in chosen:
            export_upload_train(root, n_images, 512)
        if "runs" in chosen:
            back_to_back_runs(root, n_runs)
        if "prompts" in chosen:
            prompt_session(root, cycles, args.trace, args.model)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(table(["section", "measure", "value", "unit"], ROWS))
    growth = {r[0].replace(", gc.freeze ", "_freeze_").replace(" ", "_"): r[2] for r in ROWS
              if r[1] in ("RSS growth", "RSS growth first -> last image")}
    print("RATIO " + " ".join(f"{k}_rss_growth_mb={v:.1f}" for k, v in growth.items())
          + f" total_s={time.perf_counter() - t:.0f}")


if __name__ == "__main__":
    main()
