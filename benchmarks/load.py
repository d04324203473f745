"""Load benchmark: a big export + upload + one-epoch run, back-to-back runs, a long Segment session.

    python benchmarks/load.py [--smoke] [--export] [--runs] [--prompts]

With no section flag all three run. ``--smoke`` shrinks every section (20 images, 3 runs,
100 prompt cycles). Everything is written under a temporary folder (caches, settings, run
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


def prompt_session(root: Path, cycles: int) -> None:
    from pyvirtualdisplay import Display

    with Display(visible=False, size=(1280, 1024)):
        _prompt_cycles(root, cycles)


def _prompt_cycles(root: Path, cycles: int) -> None:
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
    widget.model_combo.setCurrentText("tiny")
    app = QApplication.instance()
    widget.compute_embedding()
    while widget.busy:
        app.processEvents()
        time.sleep(0.01)
    assert widget.embeddings is not None, widget.status.text()
    rng = np.random.default_rng(0)
    objects = None

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
    row("prompts", f"{cycles} prompt/commit cycles", took, "s")
    row("prompts", "per cycle (2 points + commit)", took / cycles * 1e3, "ms")
    row("prompts", "RSS before -> after", f"{before:.0f} -> {after:.0f}", "MB")
    row("prompts", "RSS growth", after - before, "MB")
    row("prompts", "RSS at cycle k (k:MB)", " ".join(marks), "")
    row("prompts", "objects committed / undo history", f"{int(objects.data.max())} / "
        f"{len(objects._undo_history)}", "")
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes for a fast check")
    for name in ("export", "runs", "prompts"):
        parser.add_argument(f"--{name}", action="store_true")
    args = parser.parse_args()
    chosen = [n for n in ("export", "runs", "prompts") if getattr(args, n)] or \
        ["export", "runs", "prompts"]
    root = Path(tempfile.mkdtemp(prefix="raysam-load-"))
    for key in ("CACHE", "CONFIG", "DATA"):
        os.environ[f"NAPARI_RAYSAM_{key}"] = str(root / key.lower())
    os.environ.pop("RAY_ADDRESS", None)
    n_images, n_runs, cycles = (20, 3, 100) if args.smoke else (200, 20, 1000)
    print(f"machine: {machine()}; sections {chosen}; {'smoke' if args.smoke else 'full'}")
    t = time.perf_counter()
    try:
        if "export" in chosen:
            export_upload_train(root, n_images, 512)
        if "runs" in chosen:
            back_to_back_runs(root, n_runs)
        if "prompts" in chosen:
            prompt_session(root, cycles)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(table(["section", "measure", "value", "unit"], ROWS))
    growth = {r[0]: r[2] for r in ROWS if r[1] in ("RSS growth", "RSS growth first -> last image")}
    print("RATIO " + " ".join(f"{k}_rss_growth_mb={v:.1f}" for k, v in growth.items())
          + f" total_s={time.perf_counter() - t:.0f}")


if __name__ == "__main__":
    main()
