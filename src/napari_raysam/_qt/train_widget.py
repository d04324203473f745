"""Train dock: connect to a Ray cluster, fine-tune on a training set, watch it, use the result.

All cluster I/O runs in thread workers; the dock only reads the form and shows events.
"""

from __future__ import annotations

import re

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core import runs
from ..core.cluster import ClusterProfile, ProfileStore, connect
from ..core.errors import RaysamError
from ..core.local_head import LocalHead
from ..core.run_index import RunIndex
from ..core.run_text import epoch_text, fetch_action, model_label, model_summary, use_label
from ..core.training.config import MODES
from ._common import CLUSTER_MODULES, StreamThread, preload, run_in_worker, show_status, spin
from .gc_pauses import QuietCollector
from .metrics_plot import MetricsPlot

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class TrainWidget(QWidget):
    """The Train dock."""

    def __init__(self, napari_viewer, profiles: ProfileStore | None = None,
                 index: RunIndex | None = None, head: LocalHead | None = None):
        super().__init__()
        preload(CLUSTER_MODULES)
        # what the dock loaded lives on: out of the full collections' walks from now on
        self.quiet_gc = QuietCollector(napari_viewer)
        self.viewer = napari_viewer
        self.profiles = profiles or ProfileStore()
        self.index = index or RunIndex()
        self._checked: tuple | None = None  # (address, storage) last checked by Connect
        self.head = head or LocalHead()
        self.record = None  # the run being followed
        self.model = None  # the registered model of the last finished run
        self.follower = None
        self.workers: list = []

        self.profile_combo = QComboBox()
        self.address_edit = QLineEdit()
        self.token_env_edit = QLineEdit()
        self.token_env_edit.setPlaceholderText("name of the env var holding the token")
        self.storage_edit = QLineEdit()
        self.storage_edit.setPlaceholderText("shared folder, s3:// or gs:// (local: default)")
        self.save_profile_button = QPushButton("Save profile")
        self.connect_button = QPushButton("Connect")
        self.stop_local_button = QPushButton("Stop local cluster")
        self.summary = QLabel("Not connected.")
        self.summary.setWordWrap(True)

        self.dataset_edit = QLineEdit()
        self.last_export_button = QPushButton("Use last export")
        self.model_edit = QLineEdit()
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(MODES)
        self.epochs = spin(QSpinBox, 1, 10_000, 5)
        self.workers_spin = spin(QSpinBox, 1, 1024, 1)
        self.gpus = spin(QDoubleSpinBox, 0, 16, 0, step=0.5, decimals=2)
        self.lr = spin(QDoubleSpinBox, 1e-6, 1.0, 1e-4, step=1e-4, decimals=6)
        self.objects = spin(QSpinBox, 1, 256, 8)
        self.start_button = QPushButton("Start")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.runs_combo = QComboBox()
        self.reattach_button = QPushButton("Re-attach")
        self.fetch_button = QPushButton("Fetch")  # a FAILED/STOPPED run: its last checkpoint
        self.fetch_button.setEnabled(False)

        self.plot = MetricsPlot()
        self.progress_bar = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_box = QGroupBox("Log")
        self.log_box.setCheckable(True)
        self.log_box.setChecked(False)
        QVBoxLayout(self.log_box).addWidget(self.log_view)
        self.log_box.toggled.connect(self.log_view.setVisible)
        self.log_view.setVisible(False)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.use_button = QPushButton("Use in Segment")
        self.use_button.setEnabled(False)
        self.auto_use = QCheckBox("Use in Segment when done")

        cluster = QFormLayout()
        cluster.addRow("Profile", self.profile_combo)
        cluster.addRow("Address", self.address_edit)
        cluster.addRow("Token env", self.token_env_edit)
        cluster.addRow("Storage", self.storage_edit)
        row = QHBoxLayout()
        for button in (self.save_profile_button, self.connect_button, self.stop_local_button):
            row.addWidget(button)
        form = QFormLayout()
        data_row = QHBoxLayout()
        data_row.addWidget(self.dataset_edit)
        data_row.addWidget(self.last_export_button)
        form.addRow("Training set", data_row)
        for label, widget in (("Base model", self.model_edit), ("Mode", self.mode_combo),
                              ("Epochs", self.epochs), ("Workers", self.workers_spin),
                              ("GPUs/worker", self.gpus), ("Learning rate", self.lr),
                              ("Objects/image", self.objects)):
            form.addRow(label, widget)
        run_row = QHBoxLayout()
        for widget in (self.start_button, self.cancel_button, self.runs_combo,
                       self.reattach_button, self.fetch_button):
            run_row.addWidget(widget)
        layout = QVBoxLayout(self)
        layout.addLayout(cluster)
        layout.addLayout(row)
        layout.addWidget(self.summary)
        layout.addLayout(form)
        layout.addLayout(run_row)
        for widget in (self.progress_bar, self.status, self.plot, self.result, self.use_button,
                       self.auto_use, self.log_box):
            layout.addWidget(widget)

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

        return self._run(work, (), done, "Connecting...")

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
                "mode": self.mode_combo.currentText(), "epochs": self.epochs.value(),
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
        self.plot.clear()
        self.result.setText("")
        self.use_button.setEnabled(False)
        preflight = self._checked != (profile.address, profile.storage)
        return self._run(runs.submit, (profile, dataset, self.options(), self.index, self.head,
                                       preflight),
                         self.follow, "Uploading the training set and submitting...")

    def follow(self, record) -> None:
        """Stream a run's events into the dock (replaying what already happened)."""
        if self.follower is not None:
            self.follower.quit()
        self.record = record
        self.cancel_button.setEnabled(True)
        self.refresh_runs()
        show_status(self.status, f"Following {record.name}...")
        self.follower = StreamThread(runs.follow, (record, self.index, True, 0.5, self.head))
        self.follower.item.connect(self._on_event)
        self.follower.failed.connect(self._on_error)
        self.follower.start()

    def _on_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "epoch":
            self.plot.add(event)
            self.progress_bar.setRange(0, int(event.get("epochs") or 1))
            self.progress_bar.setValue(int(event["epoch"]))
            show_status(self.status, epoch_text(event))
        elif kind == "log":  # Ray colours its log lines: drop the terminal escape codes
            self.log_view.appendPlainText(ANSI.sub("", event.get("line", "")))
        elif kind == "status":
            state = event.get("status")
            show_status(self.status, f"{self.record.name}: {state} {event.get('message') or ''}",
                        error=state == "FAILED")
            if event.get("log_tail"):
                self.log_view.appendPlainText(event["log_tail"])
                self.log_box.setChecked(True)
            if state in ("SUCCEEDED", "FAILED", "STOPPED"):
                self.cancel_button.setEnabled(False)
                self.refresh_runs()
            if state == "SUCCEEDED":
                self.fetch(self.record)
        elif kind == "error":
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
        self.refresh_runs()
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
            self.runs_combo.addItem(f"{record.name} [{record.state}]", record.name)
        if self.record is not None and self.runs_combo.findData(self.record.name) >= 0:
            self.runs_combo.setCurrentIndex(self.runs_combo.findData(self.record.name))
        self.runs_combo.blockSignals(False)
        self._show_fetch()

    def _show_fetch(self) -> None:
        """The Fetch button of the selected run: "Fetch last checkpoint" once it FAILED/STOPPED."""
        states = {r.name: r.state for r in self.index.list()}
        action = fetch_action(states.get(self.runs_combo.currentData()))
        self.fetch_button.setText(action[0] if action else "Fetch")
        self.fetch_button.setEnabled(action is not None)

    def reattach(self, name: str | None = None) -> None:
        """Follow a known run again (after napari restarted), replaying its metrics."""
        name = name or self.runs_combo.currentData()
        if not name:
            show_status(self.status, "No known runs to re-attach to.", error=True)
            return
        self.plot.clear()
        self.follow(self.index.get(name))

    def use_in_segment(self) -> bool:
        """Make the fine-tuned checkpoint the Segment dock's model."""
        if self.model is None:
            return False
        for widget in self.viewer.window.dock_widgets.values():
            if hasattr(widget, "model_combo"):
                widget.model_combo.setCurrentText(f"run:{self.model.name}")
                widget._on_model_change()
                show_status(self.status, f"The Segment dock now uses {model_label(self.model)}.")
                return True
        show_status(self.status, f"Open the Segment dock and pick run:{self.model.name}.")
        return False

    def _segment_model(self) -> str | None:
        for widget in self.viewer.window.dock_widgets.values():
            if hasattr(widget, "model_combo"):
                return widget.model_combo.currentText()
        return None

    # --- plumbing -------------------------------------------------------------------------

    def _guard(self, func):
        try:
            return func()
        except RaysamError as exc:  # shown in the dock, napari keeps running
            show_status(self.status, str(exc), error=True)
            return None

    def _run(self, func, args, done, message):
        show_status(self.status, message)
        worker = run_in_worker(func, args, done, self._on_error)
        self.workers.append(worker)
        worker.finished.connect(lambda: self.workers.remove(worker))
        return worker

    def _on_error(self, exc) -> None:
        show_status(self.status, str(exc), error=True)

    def _detach_workers(self) -> None:
        """Disconnect every worker from this dock (touches no Qt widget: it may be gone)."""
        for worker in [*self.workers, self.follower]:
            if worker is None:
                continue
            for signal in ("item", "failed", "returned", "errored", "finished"):
                try:
                    getattr(worker, signal).disconnect()
                except (AttributeError, TypeError, RuntimeError):
                    pass
            if hasattr(worker, "quit"):
                worker.quit()
