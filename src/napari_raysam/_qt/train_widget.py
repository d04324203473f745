"""Train dock: connect to a Ray cluster, fine-tune on a training set, watch it, use the result.

All cluster I/O runs in thread workers; the dock only reads the form and shows events.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QWidget

from napari_raysam._qt._common import (
    CLUSTER_MODULES,
    DockLifetime,
    ViewerHooks,
    detach_workers,
    follow_run,
    preload,
    show_status,
    start_worker,
)
from napari_raysam._qt._dock import find_dock
from napari_raysam._qt.gc_pauses import QuietCollector
from napari_raysam._qt.train_form import NOT_CONNECTED, TrainForm, run_tip
from napari_raysam._qt.train_model_actions import ModelActions
from napari_raysam.core import runs
from napari_raysam.core.cluster import ClusterProfile, ProfileStore, connect
from napari_raysam.core.cluster.local_head import LocalHead
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.runs.records import RunIndex
from napari_raysam.core.runs.text import (
    ANSI,
    epoch_text,
    fetch_action,
    model_label,
    model_summary,
    progress_text,
    run_item_text,
    run_status_text,
    use_label,
)


class TrainWidget(DockLifetime, TrainForm, ModelActions, QWidget):
    """The Train dock."""

    def __init__(self, napari_viewer, profiles: ProfileStore | None = None,
                 index: RunIndex | None = None, head: LocalHead | None = None):
        super().__init__()
        preload(CLUSTER_MODULES)
        self.hooks = ViewerHooks()  # released when the dock is closed
        # what the dock loaded lives on: out of the full collections' walks from now on
        self.quiet_gc = QuietCollector(napari_viewer, self.hooks)
        self.viewer = napari_viewer
        self.profiles = profiles or ProfileStore()
        self.index = index or RunIndex()
        self._checked: tuple | None = None  # (address, storage) last checked by Connect
        self.head = head or LocalHead()
        self.record = None  # the run being followed
        self.model = None  # the registered model of the last finished run
        self.evaluating = None  # the worker of a test-set evaluation while it runs
        self.follower = None
        self.workers: list = []

        self._build_form()

        self.profile_combo.currentTextChanged.connect(self._show_profile)
        self.save_profile_button.clicked.connect(lambda: self.save_profile())
        self.connect_button.clicked.connect(lambda: self.connect())
        self.stop_local_button.clicked.connect(lambda: self.stop_local())
        self.last_export_button.clicked.connect(lambda: self.use_last_export())
        self.start_button.clicked.connect(lambda: self.start())
        self.cancel_button.clicked.connect(lambda: self.cancel())
        self.reattach_button.clicked.connect(lambda: self.reattach())
        self.fetch_button.clicked.connect(lambda: self.fetch())
        self.runs_combo.currentIndexChanged.connect(lambda _i: self._show_fetch())
        self.use_button.clicked.connect(lambda: self.use_in_segment())
        self.export_button.clicked.connect(lambda: self.export_model())
        self.evaluate_button.clicked.connect(lambda: self.evaluate_test_set())
        # closing the dock (or napari) leaves runs going; stop delivering to deleted widgets
        self.destroyed.connect(lambda *_: self._detach_workers())
        self.refresh_profiles()
        self.refresh_runs()
        self.model_edit.setText(self._segment_model() or "tiny")

    # --- profiles and cluster -------------------------------------------------------------

    def refresh_profiles(self) -> None:
        current = self.profile_combo.currentText()
        self.profile_combo.blockSignals(True)
        self.profile_combo.clear()
        self.profile_combo.addItems([p.name for p in self.profiles.list()])
        self.profile_combo.setCurrentText(current or "local")
        self.profile_combo.blockSignals(False)
        self._show_profile(self.profile_combo.currentText())

    def _show_profile(self, name: str) -> None:
        profile = next((p for p in self.profiles.list() if p.name == name), ClusterProfile())
        self.address_edit.setText(profile.address)
        self.token_env_edit.setText(profile.token_env or "")
        self.storage_edit.setText(profile.storage or "")

    def current_profile(self) -> ClusterProfile:
        """The profile as the form shows it (validated)."""
        return ClusterProfile(
            name=self.profile_combo.currentText() or "local",
            address=self.address_edit.text().strip() or "local",
            token_env=self.token_env_edit.text().strip() or None,
            storage=self.storage_edit.text().strip() or None,
        ).validate()

    def save_profile(self) -> None:
        self._guard(lambda: (self.profiles.save(self.current_profile()), self.refresh_profiles()))

    def connect(self):
        """Start the local head if needed, then summarise the cluster (in a worker)."""
        profile = self._guard(self.current_profile)
        if profile is None:
            return None

        def work():
            if profile.is_local:
                self.head.start(profile.token())
            return connect(profile, head=self.head)

        def done(summary) -> None:
            self.summary.setText(summary.text())
            self._checked = (profile.address, profile.storage)  # Start needs no second probe
            show_status(self.status, f"Connected to {_where(profile.address)}.")

        def failed(exc) -> None:
            self.summary.setText(NOT_CONNECTED)
            self._on_error(exc)

        return self._run(work, (), done, "Connecting...", failed)

    def stop_local(self):
        return self._run(self.head.stop, (), lambda stopped: show_status(
            self.status, "Local cluster stopped." if stopped else "No local cluster running."),
            "Stopping the local cluster...")

    # --- runs -----------------------------------------------------------------------------

    def use_last_export(self) -> str | None:
        """Fill the training set with the Export dock's last export, if any."""
        for widget in self.viewer.window.dock_widgets.values():
            path = getattr(widget, "last_export_path", None)
            if path:
                self.dataset_edit.setText(str(path))
                return str(path)
        show_status(self.status, "Nothing exported yet in this session: use the Export dock "
                    "or type the training-set folder.", error=True)
        return None

    def options(self) -> dict:
        return {"model": self.model_edit.text().strip() or "tiny",
                "mode": self.mode_combo.currentText(), "epochs": self.epochs.value() or None,
                "patience": self.patience.value() or None,
                "lr_schedule": self.schedule_combo.currentText(),
                "lr_scaling": self.scaling_combo.currentText(),
                "workers": self.workers_spin.value(), "gpus_per_worker": self.gpus.value(),
                "lr": self.lr.value(), "objects_per_image": self.objects.value()}

    def start(self):
        """Submit a run with the form's settings and follow it."""
        profile = self._guard(self.current_profile)
        dataset = self.dataset_edit.text().strip()
        if profile is None:
            return None
        if not dataset:
            show_status(self.status, "Choose a training set folder first.", error=True)
            return None
        self._clear_run_view()
        preflight = self._checked != (profile.address, profile.storage)
        return self._run(runs.submit, (profile, dataset, self.options(), self.index, self.head,
                                       preflight),
                         self._submitted, "Uploading the training set and submitting...")

    def _submitted(self, record) -> None:
        if self.summary.text() == NOT_CONNECTED:  # the submission went through: connected
            self.summary.setText(f"Connected to {_where(record.address)} (Connect shows its "
                                 "nodes, CPUs and GPUs).")
        self.follow(record)

    def _clear_run_view(self) -> None:
        """A new run (or one re-attached) starts with an empty plot, log and result."""
        self.plot.clear()
        self.log_view.clear()
        self.progress_bar.reset()
        self.result.setText("")
        self.use_button.setEnabled(False)
        self.export_button.setEnabled(False)
        self.evaluate_button.setEnabled(False)
        self.evaluation.setText("")

    def follow(self, record) -> None:
        """Stream a run's events into the dock (replaying what already happened)."""
        if self.follower is not None:
            self.follower.quit()
        self.record = record
        self.cancel_button.setEnabled(True)
        self.refresh_runs()
        show_status(self.status, f"Following {record.name}...")
        self.follower = follow_run(record, self.index, self.head, self._on_event, self._on_error)

    def _on_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "start" and event.get("warning"):  # e.g. no val split: nothing measured
            self.result.setText(f"\u26a0 {event['warning']}")
        elif kind == "progress":  # the job's ETA, from its first steps on
            self.progress_bar.setRange(0, int(event.get("epochs") or 1))
            show_status(self.status, progress_text(event))
        elif kind == "epoch":
            self.plot.add(event)
            self.progress_bar.setRange(0, int(event.get("epochs") or 1))
            self.progress_bar.setValue(int(event["epoch"]))
            show_status(self.status, epoch_text(event))
        elif kind == "log":  # Ray colours its log lines: drop the terminal escape codes
            self.log_view.appendPlainText(ANSI.sub("", event.get("line", "")))
        elif kind == "status":
            state = event.get("status")
            show_status(self.status, run_status_text(self.record.name, state,
                                                     event.get("message") or "",
                                                     event.get("log_tail")),
                        error=state == "FAILED")
            if event.get("log_tail"):
                self.log_view.appendPlainText(event["log_tail"])
                self.log_box.setChecked(True)
            if state in ("SUCCEEDED", "FAILED", "STOPPED"):
                self.cancel_button.setEnabled(False)
                self.refresh_runs()
            if state == "SUCCEEDED":
                self.fetch(self.record)
        elif kind == "error":  # the cluster is out of reach: say so in the summary too
            self.summary.setText(NOT_CONNECTED)
            show_status(self.status, event.get("message", "") + " Press Connect to restart "
                        "the local cluster.", error=True)
            self.cancel_button.setEnabled(False)

    def fetch(self, record=None, partial: bool | None = None):
        """Fetch the model of ``record`` (default: the selected run); of a FAILED/STOPPED run
        (or with ``partial``) its last checkpoint, registered as ``<run>.partial-epoch<N>``."""
        name = record.name if record is not None else self.runs_combo.currentData()
        record = self._guard(lambda: self.index.get(name)) if name else None  # its latest state
        if record is None:
            return None
        partial = (fetch_action(record.state) or ("", False))[1] if partial is None else partial
        return self._run(runs.fetch, (record, None, self.index, partial), self._on_fetched,
                         "Fetching the last checkpoint..." if partial else
                         "Fetching the checkpoint...")

    def _on_fetched(self, model) -> None:
        self.model = model
        self.result.setText(model_summary(model))
        self.use_button.setText(use_label(model))
        self.use_button.setEnabled(True)
        self.export_button.setEnabled(True)
        self.evaluate_button.setEnabled(self.evaluating is None)
        self.refresh_runs()
        segment = find_dock(self.viewer, "refresh_models")
        if segment is not None:  # the fetched model appears in its model list at once
            segment.refresh_models()
        show_status(self.status, f"Fetched and registered as {model_label(model)}.")
        if self.auto_use.isChecked():
            self.use_in_segment()

    def cancel(self):
        if self.record is None:
            return None
        return self._run(runs.cancel, (self.record, self.index, 15.0, self.head),
                         lambda rec: (self.refresh_runs(), show_status(
                             self.status, f"{rec.name}: {rec.state} (its last checkpoint is "
                             "kept: 'Fetch last checkpoint' makes it a model).")),
                         "Cancelling...")

    def refresh_runs(self) -> None:
        self.runs_combo.blockSignals(True)
        self.runs_combo.clear()
        for record in reversed(self.index.list()):
            self.runs_combo.addItem(run_item_text(record.name, record.state), record.name)
            self.runs_combo.setItemData(self.runs_combo.count() - 1, run_tip(record),
                                        Qt.ItemDataRole.ToolTipRole)
        if self.record is not None and self.runs_combo.findData(self.record.name) >= 0:
            self.runs_combo.setCurrentIndex(self.runs_combo.findData(self.record.name))
        self.runs_combo.blockSignals(False)
        self.runs_combo.setMinimumWidth(self.runs_combo.sizeHint().width())  # never elided
        self._show_fetch()

    def _show_fetch(self) -> None:
        """The Fetch button of the selected run: "Fetch last checkpoint" once it FAILED/STOPPED."""
        states = {r.name: r.state for r in self.index.list()}
        action = fetch_action(states.get(self.runs_combo.currentData()))
        self.runs_combo.setToolTip(self.runs_combo.currentData(Qt.ItemDataRole.ToolTipRole) or "")
        self.fetch_button.setText(action[0] if action else "Fetch")
        self.fetch_button.setEnabled(action is not None)

    def reattach(self, name: str | None = None) -> None:
        """Follow a known run again (after napari restarted), replaying its metrics."""
        name = name or self.runs_combo.currentData()
        if not name:
            show_status(self.status, "No known runs to re-attach to.", error=True)
            return
        self._clear_run_view()
        self.follow(self.index.get(name))

    def _segment_model(self) -> str | None:
        segment = find_dock(self.viewer, "use_model")
        return None if segment is None else segment.model_spec()

    # --- plumbing -------------------------------------------------------------------------

    def _guard(self, func):
        try:
            return func()
        except RaysamError as exc:  # shown in the dock, napari keeps running
            show_status(self.status, str(exc), error=True)
            return None

    def _run(self, func, args, done, message, error=None, finished=None):
        return start_worker(self.workers, self.status, message, func, args, done,
                            error or self._on_error, finished)

    def _on_error(self, exc) -> None:
        show_status(self.status, str(exc), error=True)

    def _detach_workers(self) -> None:
        detach_workers([*self.workers, self.follower])


def _where(address: str) -> str:
    return "the local cluster" if address == "local" else address
