"""The actor pool every cluster job that applies a model runs its items through: Ray Data
``map_batches`` with one loaded model per actor, rows streamed back as they finish, and the
``progress`` events (done / total, rate, ETA) the dock and the CLI show."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

from napari_raysam.core.storage import Storage


def event_sink(storage: Storage, run: str, on_event: Callable[[dict], None] | None
               ) -> Callable[[dict], None]:
    """A function that appends an event to the run's log in storage (``runs/<run>/events``)
    and hands it to ``on_event``."""
    from napari_raysam.core.events import EventLog

    log = EventLog(storage.child("runs", run))

    def emit(event: dict) -> None:
        event = log.append({"run": run, **event})
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
        n = len(batch[self.fields[0]])
        rows = [self.one(*(str(batch[f][i]) for f in self.fields)) for i in range(n)]
        return {"row": np.array([json.dumps(r) for r in rows], dtype=object)}

    def one(self, *values: str) -> dict:
        raise NotImplementedError


def run_pool(items: list[dict], actor: type[ModelActor], actor_args: tuple, workers: int,
             threads: int, on_row: Callable[[dict], None]) -> None:
    """Run ``actor`` over ``items`` (one item per call) in ``workers`` actors of ``threads``
    CPUs each; ``on_row`` gets every result row as it arrives."""
    import ray

    from napari_raysam.core.job_env import ensure_ray

    ensure_ray(log_to_driver=False)
    ds = ray.data.from_items(items).map_batches(
        actor, batch_size=1, concurrency=workers, num_cpus=threads,
        fn_constructor_args=actor_args)
    for out in ds.iter_rows():
        on_row(json.loads(out["row"]))


class Progress:
    """``progress`` events for a job of ``total`` items, ``already`` of them done before it
    started (reused); ``unit`` names the items ("images", "planes")."""

    def __init__(self, emit: Callable[[dict], None], total: int, already: int,
                 unit: str = "images"):
        self.emit, self.total, self.already, self.unit = emit, total, already, unit
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

