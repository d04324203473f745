"""``napari-raysam train`` and ``napari-raysam evaluate``."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    from napari_raysam.train import add_train_arguments, run_from_args

    train = subparsers.add_parser("train", help="fine-tune SAM on a Ray cluster",
                                  description="Fine-tune SAM on a training set with Ray Train.")
    add_train_arguments(train)
    train.set_defaults(func=run_from_args)

    ev = subparsers.add_parser("evaluate", help="point/box/corrected mIoU on the val split",
                               description="Evaluate one or more models on a training set.")
    ev.add_argument("dataset", help="training-set folder")
    ev.add_argument("--model", action="append", required=True,
                    help="model spec; repeat to compare models")
    ev.add_argument("--split", default="val", choices=("val", "train"))
    ev.add_argument("--rounds", type=int, default=3, help="correction rounds")
    ev.add_argument("--json", action="store_true", help="print the rows as JSON")
    ev.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from napari_raysam.core.evaluate import evaluate_models, format_table

    rows = evaluate_models(args.model, args.dataset, split=args.split, rounds=args.rounds)
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    return 0
