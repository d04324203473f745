"""Job entrypoint: ``python -m napari_raysam.train DATASET --model SPEC ...``.

Runs the same way locally and as a Ray Job: attaches to ``RAY_ADDRESS`` when set (a Ray Job sets
it), else starts a local cluster. Every input is an argument or a path (under the storage URI
for remote runs); nothing depends on the submitting client's state. Progress goes to stdout: a
human progress line with ETA, or with ``--json`` one JSON event per line (the same events as
``<run>/metrics.jsonl``); the checkpoint path is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.training.config import DEFAULT_MODEL, MODES, TrainConfig


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The training options, shared by ``napari-raysam train``, ``submit`` and this module.

    Every option's help states its default (a test walks the parsers to check it)."""
    parser.add_argument("dataset", help="training-set folder (written by the Export dock/CLI) "
                                        "or its storage URI")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="base model: tiny_cells (shipped, trained on round cells), tiny "
                             "(random weights), a micro-sam name such as vit_b_lm, run:NAME "
                             "(a fine-tuned model, see `napari-raysam models list`) or a "
                             "checkpoint file (default: %(default)s)")
    parser.add_argument("--mode", choices=MODES, default="decoder",
                        help="what is trained: decoder (frozen encoder, cached embeddings, "
                             "CPU-friendly), lora (LoRA adapters on the encoder) or full "
                             "(default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1,
                        help="Ray Train workers (default: %(default)s)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0,
                        help="CPUs each worker reserves (default: %(default)s)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0,
                        help="GPUs each worker reserves; 0 trains on CPUs (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=5,
                        help="passes over the training images (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-4,
                        help="learning rate of AdamW (default: %(default)s)")
    parser.add_argument("--objects-per-image", type=int, default=8,
                        help="annotated objects sampled per image and step "
                             "(default: %(default)s)")
    parser.add_argument("--correction-rounds", type=int, default=3,
                        help="correction clicks after the first prompt, in training and in the "
                             "'corrected' val score (default: %(default)s)")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="optimizer steps per epoch (default: one pass over the training "
                             "images)")
    parser.add_argument("--images-per-step", type=int, default=1,
                        help="images per worker and optimizer step (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed of prompts and sampling (default: %(default)s)")
    parser.add_argument("--max-failures", type=int, default=2,
                        help="worker failures a run survives by resuming from its last "
                             "checkpoint; 0 ends the run at the first (default: %(default)s)")
    parser.add_argument("--storage", default=None,
                        help="run storage: a folder, or s3://bucket/prefix[?endpoint_override="
                             "host:port&scheme=http] or gs://bucket/prefix (Ray storage_path) "
                             "(default: the runs folder in the user cache; for submit: the "
                             "cluster profile's storage)")
    parser.add_argument("--name", default=None,
                        help="run name; an existing run of the same data resumes (default: a "
                             "fresh unique name)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON event per line on stdout (default: off, human lines)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own log lines and the Ray workers' output "
                             "(default: off)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        dataset=args.dataset, model=args.model, mode=args.mode, workers=args.workers,
        cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
        epochs=args.epochs, lr=args.lr, objects_per_image=args.objects_per_image,
        correction_rounds=args.correction_rounds, steps_per_epoch=args.steps_per_epoch,
        images_per_step=args.images_per_step, seed=args.seed, storage=args.storage,
        name=args.name, max_failures=args.max_failures,
    )


class ProgressPrinter:
    """Human progress: one line per epoch with losses, val mIoU and an ETA."""

    def __init__(self, out=sys.stdout):
        self.out, self.times = out, []

    def __call__(self, e: dict) -> None:
        kind = e.get("event")
        if kind == "start":
            word = "resuming" if e.get("resumed") else "starting"
            self._say(f"{word} run {e['run']} ({e['mode']}, {e['workers']} worker(s), "
                      f"{e['epochs']} epochs) in {e['run_dir']}")
            if e.get("warning"):
                self._say(f"note: {e['warning']}")
        elif kind == "baseline":
            self._say(f"before training: val mIoU point {e['val_miou_point']:.3f} "
                      f"box {e['val_miou_box']:.3f} corrected {e['val_miou_corrected']:.3f}")
        elif kind == "resume":
            self._say(f"resumed from a checkpoint at epoch {e['from_epoch']}")
        elif kind == "epoch":
            self.times.append(float(e.get("epoch_time_s") or 0.0))
            per = sum(self.times) / len(self.times)
            eta = time.strftime("%H:%M:%S", time.gmtime(per * (e["epochs"] - e["epoch"])))
            val = (f"val loss {e['val_loss']:.3f}  val mIoU point {e['val_miou_point']:.3f} "
                   f"box {e['val_miou_box']:.3f} corrected {e['val_miou_corrected']:.3f}  "
                   if "val_miou_box" in e else "(no val split)  ")
            self._say(f"epoch {e['epoch']}/{e['epochs']}  loss {e['train_loss']:.3f}  {val}"
                      f"{e['objects_per_s']:.0f} obj/s  ETA {eta}")
        elif kind == "end" and e.get("status") == "ok":
            self._say(f"done: best epoch {e.get('best_epoch')}; report {e.get('report')}")

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def train_from_args(args: argparse.Namespace):
    """Train from parsed arguments, printing progress (``--json``: events); the RunOutcome."""
    from napari_raysam.core.training.runner import run_training

    config = config_from_args(args)
    if args.json:
        def on_event(e):
            print(json.dumps(e, default=str), flush=True)
    else:
        on_event = ProgressPrinter()
    return run_training(config, on_event=on_event, log_to_driver=args.verbose)


def run_from_args(args: argparse.Namespace) -> int:
    """The job entrypoint: train, then print the checkpoint path."""
    outcome = train_from_args(args)
    if not args.json:
        print(outcome.checkpoint, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_raysam.train",
                                     description="Fine-tune SAM on a Ray cluster.")
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    from napari_raysam.cli_logging import configure_logging

    configure_logging(args.verbose)
    try:
        return run_from_args(args)
    except RaysamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
