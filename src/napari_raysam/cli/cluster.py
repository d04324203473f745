"""``napari-raysam cluster start|status|stop``, ``runs list|follow|cancel|fetch`` and
``submit``: the Train dock's cluster operations without a GUI."""

from __future__ import annotations

import argparse
import json
import os
import sys


def add_parser(subparsers) -> None:
    from napari_raysam.cli.log_setup import add_verbose_argument
    from napari_raysam.train import add_train_arguments

    cluster = subparsers.add_parser("cluster", help="the embedded local Ray head")
    csub = cluster.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    start = csub.add_parser("start", help="start (or reuse) the local head on 127.0.0.1")
    start.add_argument("--num-cpus", type=int, default=None,
                       help="CPUs the head offers (default: all of this computer's)")
    start.add_argument("--token-env", default=None,
                       help="enable token auth with the token in this environment variable "
                            "(default: none, Ray's own choice)")
    add_verbose_argument(start)
    start.set_defaults(func=_cluster_start)
    status = csub.add_parser("status", help="is the local head up? (with a cluster summary)")
    status.add_argument("--json", action="store_true", help=JSON_HELP)
    add_verbose_argument(status)
    status.set_defaults(func=_cluster_status)
    check = csub.add_parser(
        "check", help="check a cluster and its storage from both sides before any upload",
        description="Connect to the cluster's Jobs API, check the storage URI from this "
                    "computer, then run a small probe job on the cluster that writes and reads "
                    "a probe object there and reports the cluster's versions.")
    _add_cluster_arguments(check)
    check.add_argument("--storage", default=None,
                       help="storage URI (folder, s3://bucket/prefix?endpoint_override=host:port"
                            "&scheme=http, gs://bucket/prefix) (default: the profile's)")
    check.add_argument("--json", action="store_true", help=JSON_HELP)
    add_verbose_argument(check)
    check.set_defaults(func=_cluster_check)
    stop = csub.add_parser("stop", help="stop the local head this plugin started")
    add_verbose_argument(stop)
    stop.set_defaults(func=_cluster_stop)

    runs = subparsers.add_parser("runs", help="known training runs")
    rsub = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    ls = rsub.add_parser("list", help="runs in the local run index")
    ls.add_argument("--json", action="store_true", help=JSON_HELP)
    ls.set_defaults(func=_runs_list)
    for name, func, text in (("follow", _runs_follow, "stream a run's events until it ends"),
                             ("cancel", _runs_cancel, "stop a run (its last checkpoint stays)"),
                             ("fetch", _runs_fetch, "download and register a run's model")):
        p = rsub.add_parser(name, help=text)
        p.add_argument("run", help="run name (see `runs list`)")
        p.add_argument("--json", action="store_true", help=JSON_HELP)
        add_verbose_argument(p)
        p.set_defaults(func=func)
        if name == "fetch":
            p.add_argument("--out", default=None,
                           help="batch-segmentation runs: local folder for the label TIFFs and "
                                "tables (default: none; required for them)")
            p.add_argument("--partial", action="store_true",
                           help="for a failed or cancelled run without a final model: register "
                                "its last complete checkpoint as RUN.partial-epochN "
                                "(default: off)")

    submit = subparsers.add_parser(
        "submit", help="fine-tune on a Ray cluster through its Jobs API and fetch the model",
        description="Upload the training set to the profile's storage, submit the training "
                    "job, follow it until it ends, then fetch and register the model.")
    add_train_arguments(submit)
    _add_cluster_arguments(submit)
    submit.add_argument("--no-fetch", action="store_true",
                        help="do not download and register the model (default: off, fetch it)")
    submit.set_defaults(func=_submit)


JSON_HELP = "print JSON instead of text (default: off)"


def _add_cluster_arguments(parser) -> None:
    """--address, --token-env and --profile: which cluster (see _profile_from_args)."""
    parser.add_argument("--address", default=None,
                        help="Jobs API of the head, http(s)://host:8265 (default: the "
                             "profile's, else 'local': the embedded local head)")
    parser.add_argument("--token-env", default=None,
                        help="environment variable holding the cluster's auth token "
                             "(default: the profile's, else none)")
    parser.add_argument("--profile", default=None,
                        help="a saved cluster profile (default: none, the local cluster)")


def _out(args, data, text: str) -> None:
    print(json.dumps(data, default=str) if getattr(args, "json", False) else text, flush=True)


def _cluster_start(args) -> int:
    from napari_raysam.core.cluster import validate_token
    from napari_raysam.core.cluster.local_head import LocalHead

    token = None
    if args.token_env:
        token = validate_token(os.environ.get(args.token_env, ""), f"${args.token_env}")
    state = LocalHead(num_cpus=args.num_cpus).start(token)
    print(f"local Ray head running: pid {state.pid}, Jobs API {state.address}")
    return 0


def _cluster_status(args) -> int:
    from napari_raysam.core.cluster import ClusterProfile, ProfileStore, connect
    from napari_raysam.core.cluster.local_head import LocalHead

    profile = next((p for p in ProfileStore().list() if p.is_local), ClusterProfile())
    state = LocalHead().status(profile.token())
    if state is None:
        _out(args, {"running": False}, "the local Ray head is not running")
        return 1
    summary = connect(profile, check_storage=False)
    _out(args, {"running": True, "pid": state.pid, "address": state.address,
                "summary": summary.__dict__}, f"pid {state.pid}\n{summary.text()}")
    return 0


def _profile_from_args(args):
    """A saved profile (``--profile``) with ``--address/--token-env/--storage`` applied."""
    from napari_raysam.core.cluster import ClusterProfile, ProfileStore

    if args.profile:
        profile = ProfileStore().get(args.profile)
    else:
        profile = ClusterProfile(name="cli", address=args.address or "local")
    if args.address:
        profile.address = args.address
    if args.token_env:
        profile.token_env = args.token_env
    if args.storage:
        profile.storage = args.storage
    if profile.address == "local":
        profile.name = "local"
    return profile.validate()


def _cluster_check(args) -> int:
    from dataclasses import asdict

    from napari_raysam.core.cluster import connect

    summary = connect(_profile_from_args(args), start_local=False)
    _out(args, {"event": "checked", **asdict(summary)}, summary.text())
    return 0


def _cluster_stop(args) -> int:
    from napari_raysam.core.cluster.local_head import LocalHead

    stopped = LocalHead().stop()
    print("stopped the local Ray head" if stopped else "no local Ray head of ours was running")
    return 0


def _runs_list(args) -> int:
    from napari_raysam.core.runs import list_runs, record_json

    records = list_runs()
    if args.json:
        print(json.dumps([record_json(r) for r in records]))
    for r in records if not args.json else ():
        print(f"{r.name}  {r.state:<9} {r.profile:<10} {r.submitted}  "
              f"{'fetched' if r.model_dir else ''}")
    return 0


def _print_event(event: dict, as_json: bool, verbose: bool = False) -> None:
    from napari_raysam.core.runs.text import epoch_text, progress_text

    if as_json:
        print(json.dumps(event, default=str), flush=True)
        return
    kind = event.get("event")
    if kind == "log":
        if verbose:  # the job's raw log (Ray's lines among it); a failure prints its tail
            print(event["line"], flush=True)
    elif kind == "status":
        print(f"[{event['status']}] {event.get('message') or ''}", flush=True)
        if event.get("log_tail"):
            print(event["log_tail"], flush=True)
    elif kind == "error":
        print(f"error: {event['message']}", file=sys.stderr, flush=True)
    elif kind == "progress":
        print(progress_text(event), flush=True)
    elif kind == "epoch":
        print(f"{epoch_text(event)}, loss {event.get('train_loss', float('nan')):.3f}",
              flush=True)
    elif kind == "end" and event.get("returned"):
        print(event["returned"], flush=True)


def _follow(record, as_json: bool, verbose: bool = False) -> str:
    """Print a run's events until it ends; the job's raw log lines only with ``verbose``."""
    from napari_raysam.core.runs import follow

    state = record.state
    for event in follow(record):
        if event.get("event") == "log" and as_json:
            continue  # --json prints events only; the log stays in `ray job logs`
        _print_event(event, as_json, verbose)
        if event.get("event") == "status":
            state = event["status"]
        elif event.get("event") == "error":
            return "ERROR"
    return state


def _runs_follow(args) -> int:
    from napari_raysam.core.runs.records import RunIndex

    return 0 if _follow(RunIndex().get(args.run), args.json, args.verbose) == "SUCCEEDED" else 1


def _runs_cancel(args) -> int:
    from napari_raysam.core.runs import cancel
    from napari_raysam.core.runs.records import RunIndex, dumps_record

    record = cancel(RunIndex().get(args.run))
    _out(args, json.loads(dumps_record(record)), f"{record.name}: {record.state}")
    return 0


def _runs_fetch(args) -> int:
    from napari_raysam.core.errors import RaysamError
    from napari_raysam.core.runs import fetch
    from napari_raysam.core.runs.apply import APPLY, fetch_applied
    from napari_raysam.core.runs.records import RunIndex

    record = RunIndex().get(args.run)
    if record.kind == APPLY:
        if not args.out:
            raise RaysamError(f"{record.name} is a batch-segmentation run: give --out DIR for "
                              "its label TIFFs and tables.")
        dest = fetch_applied(record, args.out)
        _out(args, {"event": "fetched", "run": record.name, "out": str(dest)},
             f"labels and tables of {record.name} in {dest}")
        return 0
    model = fetch(record, partial=args.partial)
    text = f"registered {model.name}: {model.path}"
    if model.partial:
        text = (f"registered {model.name} (partial: epoch {model.epoch} of the {record.state} "
                f"run {record.name}): {model.path}\nuse it as the model run:{model.name}")
    elif args.partial:
        text += " (the run has its final model.pt; fetched that, not a partial checkpoint)"
    _out(args, {"event": "fetched", **model.__dict__}, text)
    return 0


def _submit(args: argparse.Namespace) -> int:
    from napari_raysam.core.errors import RaysamError
    from napari_raysam.core.runs import fetch, submit
    from napari_raysam.core.runs.submit import RESERVED
    from napari_raysam.core.training.config import option_fields

    if args.name:
        raise RaysamError("submit always uses a fresh run name; drop --name.")
    profile = _profile_from_args(args)
    dests = {f.name for f in option_fields()} - set(RESERVED)
    options = {k: getattr(args, k) for k in sorted(dests) if getattr(args, k, None) is not None}
    record = submit(profile, args.dataset, options, verbose=args.verbose)
    _out(args, {"event": "submitted", "run": record.name, "address": profile.address},
         f"submitted {record.name} to {profile.address}")
    state = _follow(record, args.json, args.verbose)
    if state != "SUCCEEDED":
        return 1
    if not args.no_fetch:
        from napari_raysam.core.runs.records import RunIndex
        from napari_raysam.core.runs.text import before_after_table

        model = fetch(RunIndex().get(record.name))
        table = before_after_table(model.metrics.get("before"), model.metrics.get("after"),
                                   rounds=args.correction_rounds)
        _out(args, {"event": "fetched", "model": model.name, "path": model.path,
                    "sha256": model.sha256},
             f"{table}\nmodel registered as run:{model.name}: {model.path}")
    return 0
