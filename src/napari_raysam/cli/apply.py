"""``napari-raysam apply``: segment a folder of images on a Ray cluster (the embedded local
head without ``--address``) and fetch label TIFFs and a table."""

from __future__ import annotations

import csv


def add_parser(subparsers) -> None:
    from napari_raysam.cli.cluster import JSON_HELP, _add_cluster_arguments
    from napari_raysam.cli.log_setup import add_verbose_argument

    p = subparsers.add_parser(
        "apply", help="segment every image of a folder on a Ray cluster",
        description="Upload a folder of TIFFs (by content hash) to the profile's storage, "
                    "segment every image automatically with MODEL in a pool of Ray workers "
                    "(one model each), follow the run, then fetch one label TIFF per image "
                    "and a table (table.csv, objects.csv) into --out. Images already segmented "
                    "with the same model are not done again; odd inputs are listed with the "
                    "reason and skipped.")
    p.add_argument("input", help="folder of TIFF images, or a path/URI under the storage URI")
    p.add_argument("--model", default="tiny_cells",
                   help="model spec: registry name, run:NAME, checkpoint file (default: "
                        "tiny_cells)")
    p.add_argument("--out", required=True, help="local folder for label TIFFs and tables")
    p.add_argument("--workers", type=int, default=1,
                   help="Ray workers, one model each (default: 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (and CPUs reserved) per worker (default: 1)")
    p.add_argument("--storage", default=None,
                   help="storage URI (default: the profile's; the local head: a folder in "
                        "this computer's cache)")
    _add_cluster_arguments(p)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    add_verbose_argument(p)
    p.set_defaults(func=_apply)


def _apply(args) -> int:
    from napari_raysam.cli.cluster import _follow, _out, _profile_from_args
    from napari_raysam.core.runs.apply import fetch_applied, submit_apply
    from napari_raysam.core.runs.records import RunIndex

    profile = _profile_from_args(args)
    record = submit_apply(profile, args.input, args.model, workers=args.workers,
                          threads=args.threads)
    _out(args, {"event": "submitted", "run": record.name, "address": profile.address},
         f"submitted {record.name} to {profile.address}")
    state = _follow(record, args.json, args.verbose)
    record = RunIndex().get(record.name)
    if state not in ("SUCCEEDED", "STOPPED", "FAILED"):
        return 1
    dest = fetch_applied(record, args.out)
    with open(dest / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ok = [r for r in rows if r["status"] == "ok"]
    skipped = [f"  skipped {r['image']}: {r['reason']}" for r in rows if r["status"] != "ok"]
    _out(args, {"event": "fetched", "run": record.name, "out": str(dest), "segmented": len(ok),
                "skipped": len(skipped)},
         "\n".join([f"{len(ok)} label image(s) and table.csv, objects.csv in {dest}", *skipped]))
    return 0 if state == "SUCCEEDED" else 1
