"""The whole journey, headless and offline: ``napari-raysam demo``.

1. Generate synthetic images of cells the base model has not seen ("elongated": thin, dimmer,
   textured cells; the shipped ``tiny_cells`` model was trained on round ones).
2. "Annotate": keep the ground truth of only a few cells per image, as a user would have
   committed them with clicks (sparse labels), and export them as a training set.
3. Fine-tune the base model on the embedded local Ray cluster through the Jobs API, exactly as
   the Train dock does (``core.runs``: submit, follow, fetch into the model store).
4. Report the held-out (val split) mIoU before -> after and where the outputs are.

``open_gui`` opens napari with such an image and the plugin's docks, to do the same by hand.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STYLE = "elongated"


@dataclass
class DemoOptions:
    """Sizes of the demo. ``annotated``: cells kept per image (the rest stay unlabelled);
    ``mode`` None: full for the tiny models (their encoder must learn the new cells; cheap),
    decoder otherwise (a full-size encoder is too slow to train on a CPU)."""

    images: int = 16
    epochs: int = 6
    workers: int = 2
    model: str = "tiny_cells"
    mode: str | None = None
    out: str | None = None
    annotated: int = 8
    steps_per_epoch: int = 30
    lr: float = 1e-3
    correction_rounds: int = 1
    seed: int = 0
    image_size: int = 256
    keep_cluster: bool = False

    def __post_init__(self):
        if self.mode is None:
            self.mode = "full" if self.model.strip().startswith("tiny") else "decoder"

    @classmethod
    def small(cls, **kw) -> DemoOptions:
        """Tiny sizes for tests (well under a minute of training)."""
        return cls(**{"images": 12, "epochs": 2, "steps_per_epoch": 15, **kw})


@dataclass
class DemoResult:
    out: Path
    dataset: Path
    checkpoint: Path
    report: Path
    curves: Path
    before: dict
    after: dict
    seconds: float


def default_out() -> Path:
    """A fresh folder under the user cache (``NAPARI_RAYSAM_CACHE`` overrides)."""
    from napari_raysam.core.paths import cache_dir

    return cache_dir() / "demo" / time.strftime("demo-%Y%m%d-%H%M%S")


def estimate_minutes(opts: DemoOptions) -> float:
    """Rough wall time on 2 CPU cores (measured for tiny_cells in decoder mode)."""
    per_step = 0.25 if opts.mode == "decoder" else 0.6
    val = max(1, round(opts.images * 0.25)) * 1.5
    steps = opts.epochs * (opts.steps_per_epoch * per_step * 2 / max(opts.workers, 1) + val)
    return (40 + steps + opts.images * 0.3) / 60


def plan_text(opts: DemoOptions) -> str:
    return "\n".join([
        "napari-raysam demo: the whole journey on synthetic cells, offline.",
        f"  1. generate {opts.images} images ({opts.image_size} px) of {STYLE}, dimmer cells "
        "(a style the base model has not seen)",
        f"  2. 'annotate' {opts.annotated} cells per image (sparse, as if committed by clicks) and"
        " export a training set (about a quarter of the images held out for validation)",
        f"  3. fine-tune {opts.model} ({opts.mode} mode, {opts.epochs} epochs) with "
        f"{opts.workers} Ray Train worker(s) on the embedded local Ray cluster (Jobs API)",
        "  4. compare val mIoU before -> after (point, box, point + corrections)",
        f"About {max(1, round(estimate_minutes(opts)))} min on 2 CPU cores"
        + ("." if opts.model.startswith("tiny") else
           " for the tiny model; a full-size SAM takes far longer without a GPU."),
    ])


def sparse_labels(labels: np.ndarray, keep: int, rng: np.random.Generator,
                  min_px: int = 40) -> np.ndarray:
    """Only ``keep`` randomly chosen cells (of at least ``min_px`` pixels) stay labelled."""
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    ids = ids[counts >= min_px]
    chosen = rng.choice(ids, min(keep, len(ids)), replace=False) if len(ids) else ids
    out = np.where(np.isin(labels, chosen), labels, 0)
    return out.astype(labels.dtype)


def export_annotations(dest: Path, opts: DemoOptions) -> Path:
    """Synthetic unseen-style images + sparse "annotations" -> a training set at ``dest``."""
    from napari_raysam.core.dataset import SampleInput, write_dataset
    from napari_raysam.core.dataset.synthetic import make_samples

    size = (opts.image_size, opts.image_size)
    samples = make_samples(opts.images, size, style=STYLE, seed=1000 + opts.seed)
    rng = np.random.default_rng(opts.seed)
    inputs = [SampleInput(s.image, sparse_labels(s.labels, opts.annotated, rng),
                          f"demo-{STYLE}-{i}") for i, s in enumerate(samples)]
    write_dataset(dest, inputs, seed=opts.seed, val_fraction=0.25)
    return dest


def run_options(opts: DemoOptions) -> dict:
    """The training options the demo submits (also used for the README screenshots)."""
    return {"model": opts.model, "mode": opts.mode, "workers": opts.workers,
            "epochs": opts.epochs, "lr": opts.lr, "seed": opts.seed,
            "correction_rounds": opts.correction_rounds, "steps_per_epoch": opts.steps_per_epoch}


def train_on_local_cluster(dataset: Path, opts: DemoOptions, say=print):
    """Submit the fine-tune to the embedded local head (started if needed, stopped again if we
    started it, unless ``opts.keep_cluster``), follow it, fetch and register the model."""
    from napari_raysam.core import runs
    from napari_raysam.core.cluster import ClusterProfile
    from napari_raysam.core.cluster.local_head import LocalHead
    from napari_raysam.core.errors import RaysamError
    from napari_raysam.core.runs.records import RunIndex
    from napari_raysam.train import ProgressPrinter

    head = LocalHead(num_cpus=max(os.cpu_count() or 1, opts.workers))
    started = head.status() is None
    say("[3] starting the local Ray cluster ..." if started else "[3] using the local cluster")
    head.start()
    try:
        profile = ClusterProfile(storage=str(Path(opts.out) / "storage"))
        record = runs.submit(profile, dataset, run_options(opts), head=head)
        say(f"    submitted run {record.name}; first the base model is evaluated ...")
        printer = _Indented(ProgressPrinter(), say)
        for event in runs.follow(record, head=head):
            if event.get("event") == "status" and event.get("status") == "FAILED":
                raise RaysamError(f"The demo run failed:\n{event.get('log_tail', '')}")
            if event.get("event") == "error":
                raise RaysamError(event["message"])
            printer(event)
        return runs.fetch(RunIndex().get(record.name))
    finally:
        if started and not opts.keep_cluster:
            head.stop()


def run_demo(opts: DemoOptions, say=print) -> DemoResult:
    """Steps 1-4 (see module docstring); ``say`` receives progress lines."""
    t0 = time.perf_counter()
    say(plan_text(opts))
    out = Path(opts.out).expanduser().resolve() if opts.out else default_out()
    out.mkdir(parents=True, exist_ok=True)
    opts.out = str(out)
    dataset = export_annotations(out / "training-set", opts)
    say(f"[1-2] training set with {opts.images} images: {dataset}")
    model = train_on_local_cluster(dataset, opts, say)
    result = DemoResult(out, dataset, Path(model.path), Path(model.report or ""),
                        Path(model.curves or ""), model.metrics["before"],
                        model.metrics["after"], time.perf_counter() - t0)
    say(report_text(result, opts, model.name))
    return result


class _Indented:
    """Training progress lines, indented under step 3."""

    def __init__(self, printer, say):
        self.printer, self.say = printer, say
        printer._say = lambda text: say(f"    {text}")

    def __call__(self, event: dict) -> None:
        if event.get("event") != "end":
            self.printer(event)


def report_text(r: DemoResult, opts: DemoOptions, name: str) -> str:
    from napari_raysam.core.runs.text import before_after_table

    return "\n".join([
        f"[4] {opts.model} fine-tuned on {STYLE} cells:",
        before_after_table(r.before, r.after, rounds=opts.correction_rounds),
        f"checkpoint: {r.checkpoint}",
        f"report:     {r.report}",
        f"curves:     {r.curves}",
        f"done in {r.seconds / 60:.1f} min. The model is registered as run:{name}: pick it in "
        f"the Segment dock, or `napari-raysam evaluate {r.dataset} --model run:{name}`.",
    ])


def open_gui(opts: DemoOptions, block: bool = True):
    """napari with an unseen-style sample (+ its ground truth, hidden) and every dock that
    napari.yaml lists; returns the exit code, or the viewer when ``block`` is False."""
    import napari
    from npe2 import PluginManifest

    from napari_raysam.core.dataset.synthetic import make_sample

    sample = make_sample((512, 512), style=STYLE, seed=1000 + opts.seed)
    viewer = napari.Viewer(title="napari-raysam demo", show=block)
    viewer.add_image(sample.image, name="demo cells")
    viewer.add_labels(sample.labels, name="demo cells ground truth", visible=False)
    manifest = PluginManifest.from_distribution("napari-raysam")
    for widget in manifest.contributions.widgets or []:
        viewer.window.add_plugin_dock_widget("napari-raysam", widget.display_name)
    viewer.layers.selection.active = viewer.layers["demo cells"]
    if not block:
        return viewer
    napari.run()
    return 0
