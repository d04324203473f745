"""Fine-tuning runs, client side: submit, follow, cancel, fetch (incl. a failed run's last
checkpoint), compare a fetched model with its base on a test set (:mod:`.compare`), and the
local run index.

Every run goes through the Jobs API (embedded local head and remote clusters alike); the job's
entrypoint is ``python -m napari_raysam.train`` shipped with ``runtime_env.py_modules``, its
inputs and outputs live under the profile's storage URI. Runs are recorded in the local run
index (:mod:`.records`) so a new session can list and re-attach to them.

May import: the bottom layer (``core.*`` modules), ``core.cluster``, ``core.dataset``,
``core.sam``, and ``core.training``'s schema and formats (config, events, report, checkpoint
file names). Never Qt, napari or the CLI.
"""

from napari_raysam.core.runs.fetch import FETCH_FILES, download_outputs, fetch
from napari_raysam.core.runs.follow import (
    TRAINING_EVENTS,
    cancel,
    follow,
    history,
    list_runs,
    record_json,
    refresh,
)
from napari_raysam.core.runs.partial import fetch_partial
from napari_raysam.core.runs.records import RunIndex, RunRecord
from napari_raysam.core.runs.submit import build_entrypoint, submit, train_argv, upload_base_model

__all__ = ["FETCH_FILES", "TRAINING_EVENTS", "RunIndex", "RunRecord", "build_entrypoint",
           "cancel", "download_outputs", "fetch", "fetch_partial", "follow", "history",
           "list_runs", "record_json", "refresh", "submit", "train_argv", "upload_base_model"]
