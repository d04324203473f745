"""`napari-raysam dataset create|validate|info`: training sets from the command line."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the `dataset` command group."""
    parser = subparsers.add_parser(
        "dataset", help="create, validate and inspect training sets",
        description="Create, validate and inspect napari-raysam training sets.",
    )
    sub = parser.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: parser.print_help() or 1)

    create = sub.add_parser(
        "create", help="write a training set from folders of image and label TIFFs",
        description="Pair image and label TIFFs by file name (same name, or cellpose-style "
        "_masks/_seg suffixes) and write them as a training set. Stacks are split into planes; "
        "planes without objects are skipped.",
    )
    create.add_argument("--images", required=True, metavar="DIR", help="folder of image TIFFs")
    create.add_argument("--labels", required=True, metavar="DIR", help="folder of label TIFFs")
    create.add_argument("--pattern", metavar="GLOB",
                        help="only images whose name matches GLOB (default: all)")
    create.add_argument("--out", required=True, metavar="DIR", help="training set folder")
    create.add_argument("--append", action="store_true",
                        help="add to an existing training set (default: off, a new set)")
    create.add_argument("--seed", type=int, default=0,
                        help="seed of the train/val split (default: %(default)s)")
    create.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                        help="fraction of images held out for validation: 0 makes a set "
                        "that is all train, 1 a test set that is all held out (default: "
                        "%(default)s)")
    create.add_argument("--channel-axis", type=int, default=None, metavar="AXIS",
                        help="image axis holding channels (default: inferred from the labels)")
    create.add_argument("--stack-axis", type=_axes, nargs="+", default=None, metavar="AXIS",
                        help="image axis (or axes) holding the planes, e.g. `--stack-axis 0 1` "
                        "(or 0,1) for T, Z, C, Y, X stacks (default: every axis before Y, X "
                        "except the channel axis)")
    create.add_argument("--allow-duplicates", action="store_true",
                        help="also add images whose pixels are already in the set "
                             "(default: off, skip them)")
    create.set_defaults(func=_create)

    validate = sub.add_parser("validate", help="check files, hashes, shapes and object counts")
    validate.add_argument("path", metavar="DIR", help="training set folder")
    validate.set_defaults(func=_validate)

    info = sub.add_parser("info", help="samples per split, objects, shapes, content hash")
    info.add_argument("path", metavar="DIR", help="training set folder")
    info.add_argument("--samples", action="store_true",
                      help="also list every sample (default: off)")
    info.set_defaults(func=_info)


def _axes(text: str) -> list[int]:
    """One --stack-axis word: '0' or '0,1'."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an axis number; write axes like `--stack-axis 0 1`") from None


def _create(args: argparse.Namespace) -> int:
    from napari_raysam.core.dataset import execute_plan, inputs_from_folders, plan_write

    stack = None if args.stack_axis is None else [a for word in args.stack_axis for a in word]
    inputs, skipped = inputs_from_folders(args.images, args.labels, args.pattern,
                                          args.channel_axis, stack)
    for note in skipped:
        print(f"skipped: {note}")
    plan = plan_write(args.out, inputs, mode="append" if args.append else "new",
                      allow_duplicates=args.allow_duplicates)
    print(plan.summary())
    for note in plan.skipped:
        print(f"skipped: {note}")

    def progress(done: int, total: int) -> None:
        print(f"\rwriting {done}/{total}", end="\n" if done == total else "", flush=True)

    ts = execute_plan(plan, seed=args.seed, val_fraction=args.val_fraction, progress=progress)
    _print_info(ts)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from napari_raysam.core.dataset import validate_dataset

    report = validate_dataset(args.path)
    print(report.text())
    return 0 if report.ok else 1


def _print_info(ts, samples: bool = False) -> None:
    s = ts.summary()
    print(f"training set: {s['path']} (schema {s['schema_version']}, created {s['created']})")
    print(f"content hash: {s['content_hash']}")
    print(f"samples:      {s['samples']} ({s['objects']} objects), seed {s['seed']}")
    for name, counts in s["splits"].items():
        print(f"  {name:<5}       {counts['samples']} samples, {counts['objects']} objects")
    print(f"shapes:       {', '.join(str(tuple(x)) for x in s['shapes'])}")
    print(f"dtypes:       {', '.join(s['dtypes'])}")
    sources = s["sources"]
    shown = ", ".join(sources[:5]) + (f", ... ({len(sources)} in all)" if len(sources) > 5 else "")
    print(f"sources:      {shown}")
    if s["split_warning"]:
        print(f"warning: {s['split_warning']}")
    if samples:
        for r in ts.samples:
            plane = "" if r.plane is None else f" plane {r.plane}"
            print(f"  {r.id} {r.split:<5} {tuple(r.shape)} {r.dtype} {r.n_objects} objects "
                  f"<- {r.source}{plane}")


def _info(args: argparse.Namespace) -> int:
    from napari_raysam.core.dataset import open_dataset

    _print_info(open_dataset(args.path), samples=args.samples)
    return 0
