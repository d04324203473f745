"""The actor pool every cluster job that applies a model runs its items through: Ray Data
``map_batches`` with one loaded model per actor, rows streamed back as they finish, and the
``progress`` events (done / total, rate, ETA) the dock and the CLI show."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.storage import Storage, StorageError

#: The key of a row whose results the storage refused (never stored: it stops the run).
FAILED = "failed"


def event_sink(storage: Storage, run: str, on_event: Callable[[dict], None] | None
               ) -> Callable[[dict], None]:
    """A function that appends an event to the run's log in storage (``runs/<run>/events``)
    and hands it to ``on_event``."""
    from napari_raysam.core.events import EventLog

    log = EventLog(storage.child("runs", run))

    def emit(event: dict, best_effort: bool = False) -> None:
        event = {"run": run, **event}
        try:
            event = log.append(event)
        except (OSError, RaysamError):
            if not best_effort:  # best effort: the storage that failed may refuse it too
                raise
        if on_event:
            on_event(event)

    return emit


class ModelActor:
    """One model per actor. Subclasses name the item fields they take (``fields``) and do one
    item in :meth:`one`, which returns the item's result row (a JSON-able dict)."""

    fields: tuple[str, ...] = ()

    def __init__(self, model_spec: str, storage_uri: str, threads: int = 1):
        import torch

        from napari_raysam.core.sam.models import best_device, load_model

        torch.set_num_threads(max(1, threads))
        self.model = load_model(model_spec, device=best_device())
        self.storage = Storage.open(storage_uri, side="the cluster")

    def __call__(self, batch: dict) -> dict:
        rows = []
        for i in range(len(batch[self.fields[0]])):
            try:
                rows.append(self.one(*(str(batch[f][i]) for f in self.fields)))
            except StorageError as exc:
                # returned, not raised: Ray would bury the message in a traceback; run_pool
                # stops the run with it
                rows.append({FAILED: str(exc)})
        return {"row": np.array([json.dumps(r) for r in rows], dtype=object)}

    def one(self, *values: str) -> dict:
        raise NotImplementedError


def run_pool(items: list[dict], actor: type[ModelActor], actor_args: tuple, workers: int,
             threads: int, progress: Progress, on_row: Callable[[dict], None]) -> None:
    """Run ``actor`` over ``items`` (one item per call) in ``workers`` actors of ``threads``
    CPUs each; ``on_row`` gets every result row as it arrives, ``progress`` steps. When the
    storage refuses an item's results, the run ends there: an ``end`` event with the reason,
    then StorageError (what finished stays in storage; a re-run does the rest)."""
    import ray

    from napari_raysam.core.job_env import ensure_ray

    ensure_ray(log_to_driver=False)
    # A killed actor is restarted and its unfinished batches run again (Ray Data's actor pool
    # defaults, spelled out: a lost worker must lose no item). A retried item is written again
    # under the same content-addressed names, so never twice.
    ds = ray.data.from_items(items).map_batches(
        actor, batch_size=1, concurrency=workers, num_cpus=threads, max_restarts=-1,
        max_task_retries=-1, fn_constructor_args=actor_args)
    for out in ds.iter_rows():
        row = json.loads(out["row"])
        if FAILED in row:
            progress.emit({"event": "end", "status": "failed", "error": row[FAILED],
                           "total": progress.total, progress.counted: progress.new,
                           "seconds": progress.elapsed()}, best_effort=True)
            raise StorageError(row[FAILED])
        on_row(row)
        progress.step()


class Progress:
    """``progress`` events for a job of ``total`` items, ``already`` of them done before it
    started (reused); ``unit`` names the items ("images", "planes"); ``counted`` is what its
    ``end`` event calls the items this run did ("segmented", "computed")."""

    def __init__(self, emit: Callable[..., None], total: int, already: int,
                 unit: str = "images", counted: str = "new"):
        self.emit, self.total, self.already, self.unit = emit, total, already, unit
        self.counted = counted  # the end event's name for the items done by this run
        self.new = 0
        self.todo = total - already
        self.t0 = time.monotonic()

    def step(self) -> None:
        """One more item done."""
        self.new += 1
        rate = self.new / max(self.elapsed(), 1e-6)
        self.emit({"event": "progress", "done": self.already + self.new, "total": self.total,
                   "new": self.new, "unit": self.unit, "items_per_s": rate,
                   "eta_s": (self.todo - self.new) / rate})

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

