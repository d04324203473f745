"""The Segment dock's "Compute on cluster" row: every plane of the chosen image embedded by a
job on a Ray cluster, then pulled into the local embedding cache, so every plane opens without
computing here. The rules live in ``core.runs.embed``; this row only reads the dock's form,
runs them in workers and shows their progress in the dock."""

from __future__ import annotations

from qtpy.QtWidgets import QHBoxLayout, QPushButton, QWidget

from napari_raysam._qt._common import (
    ProfileCombo,
    detach_workers,
    follow_run,
    parse_channels,
    show_status,
    start_worker,
)
from napari_raysam.core import runs
from napari_raysam.core.cluster import ProfileStore
from napari_raysam.core.cluster.local_head import LocalHead
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.runs.embed import pull_embeddings, submit_embed
from napari_raysam.core.runs.records import TERMINAL, RunIndex
from napari_raysam.core.runs.text import failure_reason, progress_text
from napari_raysam.core.sam import planes

START, CANCEL = "Compute on cluster", "Cancel cluster job"


class ClusterEmbedRow(QWidget):
    """A cluster profile and the Compute on cluster / Cancel button of a Segment dock."""

    def __init__(self, dock, profiles: ProfileStore | None = None,
                 index: RunIndex | None = None, head: LocalHead | None = None):
        super().__init__()
        self.dock = dock
        self.index = index or RunIndex()
        self.head = head or LocalHead()
        self.profile_combo = ProfileCombo(profiles or ProfileStore())
        self.button = QPushButton(START)
        self.button.setToolTip("embed every plane of the image on the cluster, then keep the "
                               "embeddings in this computer's cache")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.profile_combo, 1)
        row.addWidget(self.button)
        self.record = None
        self.model = None  # the model the running job was submitted with
        self.follower = None
        self.workers: list = []
        self.pulled: dict | None = None  # counts of the last pull
        self.failure: str | None = None  # why the last job failed (None: it did not)
        self.button.clicked.connect(lambda: self.cancel() if self.record else self.start())
        self.destroyed.connect(lambda *_: detach_workers([*self.workers, self.follower]))

    def start(self):
        """Check the image, then (in a worker) load the model, upload the planes the cache
        lacks and submit the job; follows it when submitted."""
        dock = self.dock
        layer = dock.image_layer
        if layer is None:
            return self._error("No image layer: open an image (or File > Open Sample) first.")
        try:
            channels = parse_channels(dock.channels_edit.text())
            profile = self.profile_combo.profile()
        except RaysamError as exc:
            return self._error(str(exc))
        data, ndim = layer.data, layer.ndim
        axis = layer.metadata.get("raysam_channel_axis")
        spec = dock.model_spec()

        def work():
            from napari_raysam.core.sam.models import load_model
            from napari_raysam.core.sam.precision import resolve_precision

            model = dock.model if dock.model is not None and dock.model.spec == spec \
                else load_model(spec)
            precision = resolve_precision("auto", model.device).precision
            rgbs = planes.sam_planes(data, ndim, axis, channels, model)
            return model, submit_embed(profile, model, rgbs, precision, dock.cache,
                                       index=self.index, head=self.head)

        self.button.setEnabled(False)
        return self._run(work, (), self._submitted, f"Uploading the planes of '{layer.name}' and "
                         "submitting the embedding job...")

    def _submitted(self, result) -> None:
        self.model, record = result
        self.button.setEnabled(True)
        if record is None:
            show_status(self.dock.status, "Every plane's embedding is already in the cache: "
                        "nothing to compute.")
            return
        self.record = record
        self.button.setText(CANCEL)
        show_status(self.dock.status, f"Following {record.name}...")
        self.follower = follow_run(record, self.index, self.head, self._on_event, self._error)

    def _on_event(self, event: dict) -> None:
        kind = event.get("event")
        bar = self.dock.progress_bar
        if kind == "progress":
            bar.setRange(0, int(event.get("total") or 1))
            bar.setValue(int(event.get("done") or 0))
            show_status(self.dock.status, progress_text(event))
        elif kind == "status" and event.get("status") in TERMINAL:
            self.failure = None
            if event["status"] == "FAILED":
                self.failure = (f"{self.record.name} failed: "
                                f"{failure_reason(event.get('log_tail'), 500) or 'see its log'}")
            self._pull()  # what finished before the end is pulled all the same
        elif kind == "error":
            self._error(event.get("message", ""))
            self._ended()

    def _pull(self):
        record = self.index.get(self.record.name)
        def failed(exc) -> None:
            self._ended()
            self._error(exc)

        return self._run(pull_embeddings, (record, self.model, self.dock.cache), self._pulled,
                         "Pulling the embeddings into the cache...", failed)

    def _pulled(self, counts: dict) -> None:
        self.pulled = counts
        self._ended()
        self.dock.update_cache_label()
        missing = f"; {counts['missing']} not finished on the cluster" if counts["missing"] \
            else ""
        if self.failure:
            show_status(self.dock.status, f"{self.failure}. {counts['pulled']} plane "
                        f"embedding(s) pulled{missing}.", error=True)
            return
        show_status(self.dock.status, f"{counts['pulled']} plane embedding(s) pulled into the "
                    f"cache{missing}: those planes open without computing (Compute embedding, "
                    "then move through the planes).")

    def cancel(self):
        if self.record is None:
            return None
        record = self.record
        return self._run(runs.cancel, (record, self.index, 15.0, self.head),
                         lambda rec: show_status(self.dock.status, f"{rec.name}: {rec.state}; "
                                                 "finished planes are pulled."),
                         "Cancelling...")

    def _ended(self) -> None:
        self.record = None
        self.button.setText(START)
        self.button.setEnabled(True)

    def _run(self, func, args, done, message, error=None):
        return start_worker(self.workers, self.dock.status, message, func, args, done,
                            error or self._error)

    def _error(self, exc) -> None:
        show_status(self.dock.status, str(exc), error=True)
        self.button.setEnabled(True)
        if self.record is None:
            self.button.setText(START)
