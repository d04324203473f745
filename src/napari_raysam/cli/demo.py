"""``napari-raysam demo``: the whole journey offline (see :mod:`napari_raysam.demo`)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from napari_raysam.cli.log_setup import add_verbose_argument
    from napari_raysam.core.training.config import MODES

    p = subparsers.add_parser(
        "demo", help="run the whole journey on synthetic cells (offline, a few minutes)",
        description="Generate unseen-style synthetic cells, export sparse annotations, "
                    "fine-tune on a local Ray cluster and report before/after mIoU.")
    p.add_argument("--images", type=int, help="synthetic images (default 16)")
    p.add_argument("--epochs", type=int, help="training epochs (default 6)")
    p.add_argument("--workers", type=int, help="Ray Train workers (default 2)")
    p.add_argument("--model", help="base model spec (default tiny_cells, shipped; or vit_b_lm, "
                                   "a checkpoint file)")
    p.add_argument("--mode", choices=MODES,
                   help="fine-tuning mode (default: full for tiny models, else decoder)")
    p.add_argument("--out", help="output folder (default: a fresh folder in the user cache)")
    p.add_argument("--small", action="store_true", help="tiny sizes, for tests (default: off)")
    p.add_argument("--keep-cluster", action="store_true",
                   help="leave the local Ray cluster running (stop: napari-raysam cluster stop)"
                        " (default: off)")
    p.add_argument("--gui", action="store_true",
                   help="open napari with a sample and the plugin's docks instead "
                        "(default: off)")
    add_verbose_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_raysam.demo import DemoOptions, open_gui, run_demo

    given = {k: getattr(args, k) for k in ("images", "epochs", "workers", "model", "mode", "out")
             if getattr(args, k) is not None}
    given["keep_cluster"] = args.keep_cluster
    opts = DemoOptions.small(**given) if args.small else DemoOptions(**given)
    if args.gui:
        return open_gui(opts)
    run_demo(opts, say=lambda text: print(text, flush=True))
    return 0
