"""Job entrypoint: ``python -m napari_raysam.train DATASET --model SPEC ...``.

Runs the same way locally and as a Ray Job: attaches to ``RAY_ADDRESS`` when set (a Ray Job sets
it), else starts a local cluster. Every input is an argument or a path (under the storage URI
for remote runs); nothing depends on the submitting client's state. Progress goes to stdout: a
human progress line with ETA, or with ``--json`` one JSON event per line (the same events as
the run's ``events/`` in storage); the checkpoint path is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import sys

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.training.config import add_arguments, from_namespace


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The training options, shared by ``napari-raysam train``, ``submit`` and this module:
    the training set, TrainConfig's options (its schema, each help with its default), and how
    progress is printed."""
    parser.add_argument("dataset", help="training-set folder (written by the Export dock/CLI) "
                                        "or its storage URI")
    add_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help="one JSON event per line on stdout (default: off, human lines)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own log lines and the Ray workers' output "
                             "(default: off)")


class ProgressPrinter:
    """Human progress: the job's progress lines and one line per epoch with losses, val mIoU
    and the job's ETA (``core.runs.text`` words them as the Train dock does)."""

    def __init__(self, out=sys.stdout):
        self.out = out

    def __call__(self, e: dict) -> None:
        from napari_raysam.core.runs.text import eta_text, progress_text

        kind = e.get("event")
        if kind == "start":
            word = "resuming" if e.get("resumed") else "starting"
            epochs = ("epochs sized from the training set" if e["epochs"] == "auto"
                      else f"{e['epochs']} epochs")
            self._say(f"{word} run {e['run']} ({e['mode']}, {e['workers']} worker(s), "
                      f"{epochs}) in {e['run_dir']}")
            if e.get("warning"):
                self._say(f"note: {e['warning']}")
        elif kind == "baseline":
            self._say(f"before training: val mIoU point {e['val_miou_point']:.3f} "
                      f"box {e['val_miou_box']:.3f} corrected {e['val_miou_corrected']:.3f}")
        elif kind == "resume":
            self._say(f"resumed from a checkpoint at epoch {e['from_epoch']}")
        elif kind == "progress":
            self._say(progress_text(e))
        elif kind == "epoch":
            val = (f"val loss {e['val_loss']:.3f}  val mIoU point {e['val_miou_point']:.3f} "
                   f"box {e['val_miou_box']:.3f} corrected {e['val_miou_corrected']:.3f}  "
                   if "val_miou_box" in e else "(no val split)  ")
            tail = ("stopped early: no better val box mIoU" if e.get("stopped_early")
                    else eta_text(e.get("eta_s")))
            self._say(f"epoch {e['epoch']}/{e['epochs']}  loss {e['train_loss']:.3f}  {val}"
                      f"{e['objects_per_s']:.0f} obj/s  {tail}".rstrip())
        elif kind == "end" and e.get("status") == "ok":
            returned = e.get("returned") or f"best epoch {e.get('best_epoch')}."
            self._say(f"done: {returned} Report: {e.get('report')}")

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def train_from_args(args: argparse.Namespace):
    """Train from parsed arguments, printing progress (``--json``: events); the RunOutcome."""
    from napari_raysam.core.training.runner import run_training

    config = from_namespace(args)
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
    from napari_raysam.cli.log_setup import configure_logging

    configure_logging(args.verbose)
    try:
        return run_from_args(args)
    except RaysamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
