"""``napari-raysam train`` and ``napari-raysam evaluate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> None:
    from napari_raysam.train import add_train_arguments

    train = subparsers.add_parser(
        "train", help="fine-tune SAM with Ray Train here (a local Ray instance or RAY_ADDRESS)",
        description="Fine-tune SAM on a training set with Ray Train, print the held-out mIoU "
                    "before -> after, and register the model as run:NAME (see `napari-raysam "
                    "models list`). For a cluster through its Jobs API use `submit`.")
    add_train_arguments(train)
    train.set_defaults(func=_train)

    ev = subparsers.add_parser("evaluate", help="point/box/corrected mIoU on the val split",
                               description="Evaluate one or more models on a training set.")
    ev.add_argument("dataset", help="training-set folder")
    ev.add_argument("--model", action="append", required=True,
                    help="model spec (tiny_cells, tiny, a micro-sam name, run:NAME or a "
                         "checkpoint file); repeat to compare models (with two: base, then "
                         "fine-tuned, a verdict by the rule report.json uses)")
    ev.add_argument("--split", default="val", choices=("val", "train", "auto"),
                    help="which split to score; auto: the held-out val split, or all of a set "
                         "that has one split only (default: %(default)s)")
    ev.add_argument("--rounds", type=int, default=3,
                    help="correction clicks after the first point, for the 'corrected' score "
                         "(default: %(default)s)")
    ev.add_argument("--json", action="store_true",
                    help="print the rows as JSON (default: off, a table)")
    ev.set_defaults(func=_evaluate)


def _train(args: argparse.Namespace) -> int:
    """Train, register the model like ``submit`` does, print the before -> after table."""
    from napari_raysam.core.runs.text import before_after_table
    from napari_raysam.train import train_from_args

    outcome = train_from_args(args)
    model = register_outcome(outcome, args.model)
    if args.json:
        print(json.dumps({"event": "registered", "model": model.name, "spec": f"run:{model.name}",
                          "path": model.path, "sha256": model.sha256}), flush=True)
        return 0
    print(before_after_table(outcome.before, outcome.after, rounds=args.correction_rounds))
    if outcome.facts.get("returned"):
        print(outcome.facts["returned"])
    print(f"checkpoint: {outcome.checkpoint}")
    print(f"model registered as run:{model.name}: use it as --model run:{model.name}, or pick "
          "it in the Segment dock", flush=True)
    return 0


def register_outcome(outcome, base_model: str):
    """Register a finished run's model.pt in the local model store, as ``runs.fetch`` does
    for a submitted run: a run folder on this computer is registered in place; a run in object
    storage is downloaded into the store first."""
    from napari_raysam.core.events import now_iso
    from napari_raysam.core.model_store import RegisteredModel, model_store_dir, register_model
    from napari_raysam.core.runs import FETCH_FILES, download_outputs
    from napari_raysam.core.storage import Storage, file_sha256, is_remote_uri

    if is_remote_uri(outcome.run_dir):
        dest = model_store_dir() / outcome.name
        run = Storage.open(outcome.run_dir)
        shas = download_outputs(run, run.root, dest)
        got = {f: str(dest / f) for f in shas}
        digest = shas["model.pt"]
    else:
        folder = Path(outcome.run_dir)
        got = {f: str(folder / f) for f in FETCH_FILES if (folder / f).is_file()}
        digest = file_sha256(got["model.pt"])
    model = RegisteredModel(
        name=outcome.name, path=got["model.pt"], base_model=str(base_model),
        metrics={"before": outcome.before or None, "after": outcome.after or None,
                 **outcome.facts},
        sha256=digest, run=outcome.name, registered=now_iso(), report=got.get("report.json"),
        curves=got.get("curves.png"))
    return register_model(model)


def _evaluate(args: argparse.Namespace) -> int:
    from napari_raysam.core.sam.evaluate import evaluate_models, format_table
    from napari_raysam.core.training.report import VERDICT_LABELS, rows_verdict

    rows = evaluate_models(args.model, args.dataset, split=args.split, rounds=args.rounds)
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    if len(rows) == 2 and not args.json:
        kind, sentence = rows_verdict(*rows)
        print(f"verdict ({rows[1]['model']} vs {rows[0]['model']}, decided by the box mIoU): "
              f"{VERDICT_LABELS[kind]}" + (f". {sentence}" if kind == "worse" else ""))
    return 0
