"""`napari-raysam` command line: the same operations as the docks, for scripts and clusters.

Each command group lives in its own module exposing ``add_parser(subparsers)``; the chosen
subcommand's parser sets ``func`` which returns the exit code. Every option's help states its
default. Commands that talk to Ray have ``--verbose``; without it Ray's own log lines are kept
out of the output (:mod:`.log_setup`). May import anything in ``core``; nothing imports it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from napari_raysam.core.errors import RaysamError

#: Modules that contribute subcommands (imported lazily so `--help` stays fast).
COMMAND_MODULES = (
    "napari_raysam.cli.models",
    "napari_raysam.cli.dataset",
    "napari_raysam.cli.train",
    "napari_raysam.cli.demo",
    "napari_raysam.cli.cluster",
    "napari_raysam.cli.apply",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-raysam",
        description="Segment cells with SAM, export training sets, fine-tune on Ray.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code. A reader that closed our stdout early (``| head``) ends
    the command quietly instead of with a BrokenPipeError traceback."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # buffered output meets the closed pipe here, not at exit
    except BrokenPipeError:
        # As Python's docs advise (library/signal.html, "Note on SIGPIPE"): point stdout at
        # devnull so the flush at interpreter exit does not raise again; exit 1 like EPIPE.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a real file (embedded, captured)
            pass
        return 1


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    if getattr(args, "verbose", None) is not None:  # a command that talks to Ray
        from napari_raysam.cli.log_setup import configure_logging

        configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (RaysamError, FileNotFoundError, PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

