"""Job entrypoint: ``python -m napari_raysam.apply STORAGE INPUTS --model SPEC --name RUN``.

Segments every image of the folder ``INPUTS`` (relative to the storage URI ``STORAGE``) with
``SPEC`` in a Ray Data actor pool and writes label TIFFs and a table to storage (see
``core.apply``). With ``--embeddings``: ``INPUTS`` holds SAM-ready planes and every plane's
image embedding is written to storage in the embedding cache's format instead
(``core.apply.embed``). Attaches to ``RAY_ADDRESS`` when set (a Ray Job sets it), else starts
a local cluster. ``--json``: one JSON event per line on stdout, the same events as the run's
storage.
"""

from __future__ import annotations

import argparse
import json
import sys

from napari_raysam.core.errors import RaysamError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m napari_raysam.apply",
                                description="Segment a folder of images on a Ray cluster.")
    p.add_argument("storage", help="the storage URI (root) holding inputs and outputs")
    p.add_argument("inputs", help="folder of input TIFFs, relative to the storage URI")
    p.add_argument("--model", required=True, help="model spec the cluster can load")
    p.add_argument("--name", required=True, help="run name (events and table under runs/NAME)")
    p.add_argument("--workers", type=int, default=1,
                   help="actors, one model each (default: 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (and CPUs reserved) per actor (default: 1)")
    p.add_argument("--points-per-side", type=int, default=16,
                   help="mask generator's prompt grid, models without a decoder (default: 16)")
    p.add_argument("--min-size", type=int, default=10,
                   help="drop objects smaller than this many pixels (default: 10)")
    p.add_argument("--embeddings", action="store_true",
                   help="compute the planes' image embeddings instead of labels (default: off)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="embeddings' precision, the client's (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON event per line (default: off)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from napari_raysam.core.apply.job import ApplyConfig, ApplySettings, run_apply
    from napari_raysam.core.runs.text import progress_text

    if args.workers < 1 or args.threads < 1:
        print("error: --workers and --threads must be at least 1", file=sys.stderr)
        return 2
    settings = ApplySettings(points_per_side=args.points_per_side, min_size=args.min_size,
                             threads=args.threads)
    config = ApplyConfig(storage=args.storage, inputs=args.inputs, model=args.model,
                         name=args.name, workers=args.workers, settings=settings)

    def show(event: dict) -> None:
        if args.json:
            print(json.dumps(event, default=str), flush=True)
        elif event.get("event") == "progress":
            print(progress_text(event), flush=True)

    try:
        if args.embeddings:
            from napari_raysam.core.apply.embed import EmbedConfig, run_embed

            run_embed(EmbedConfig(storage=args.storage, inputs=args.inputs, model=args.model,
                                  name=args.name, precision=args.precision,
                                  workers=args.workers, threads=args.threads), show)
        else:
            run_apply(config, show)
    except RaysamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
