"""Apply dock: segment a whole folder of images on a Ray cluster with a (fine-tuned) model,
watch the progress, open the results as labels layers beside their images.

Cluster I/O runs in workers; the rules live in ``core.runs.apply`` (submit, fetch, pairs).
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from napari_raysam._qt._common import (
    CLUSTER_MODULES,
    DockLifetime,
    ProfileCombo,
    ViewerHooks,
    detach_workers,
    follow_run,
    preload,
    show_status,
    spin,
    start_worker,
)
from napari_raysam._qt._dock import find_dock, scroll_body
from napari_raysam.core import runs
from napari_raysam.core.cluster import ClusterProfile, ProfileStore
from napari_raysam.core.cluster.local_head import LocalHead
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.runs.apply import fetch_applied, result_pairs, submit_apply
from napari_raysam.core.runs.records import TERMINAL, RunIndex
from napari_raysam.core.runs.text import progress_text

#: Results opened as layers at most (a folder of thousands would bury the viewer).
MAX_OPENED = 20


class ApplyWidget(DockLifetime, QWidget):
    """The Apply dock."""

    def __init__(self, napari_viewer, profiles: ProfileStore | None = None,
                 index: RunIndex | None = None, head: LocalHead | None = None):
        super().__init__()
        preload(CLUSTER_MODULES)
        self.hooks = ViewerHooks()  # released when the dock is closed
        self.viewer = napari_viewer
        self.profiles = profiles or ProfileStore()
        self.index = index or RunIndex()
        self.head = head or LocalHead()
        self.record = None
        self.results = None  # the folder the last run's results were fetched into
        self.follower = None
        self.workers: list = []
        self._build()
        self.destroyed.connect(lambda *_: self._detach())

    def _build(self) -> None:
        layout = scroll_body(self)
        form = QFormLayout()
        self.profile_combo = ProfileCombo(self.profiles)
        form.addRow("Cluster", self.profile_combo)
        segment = find_dock(self.viewer, "model_spec")
        self.model_edit = QLineEdit((segment.model_spec() if segment else None) or "tiny_cells")
        self.model_edit.setToolTip("registry name, run:NAME or a checkpoint file")
        form.addRow("Model", self.model_edit)
        self.input_edit, input_row = self._folder_row("folder of TIFF images")
        form.addRow("Images", input_row)
        self.out_edit, out_row = self._folder_row("where label TIFFs and tables go")
        form.addRow("Results to", out_row)
        self.workers_spin = spin(QSpinBox, 1, 64, 1)
        self.workers_spin.setToolTip("Ray workers, one model each")
        form.addRow("Workers", self.workers_spin)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Segment folder")
        self.cancel_button = QPushButton("Cancel")
        self.open_button = QPushButton("Open results")
        self.cancel_button.setEnabled(False)
        self.open_button.setEnabled(False)
        for b in (self.start_button, self.cancel_button, self.open_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)
        self.progress_bar = QProgressBar()
        layout.addWidget(self.progress_bar)
        self.status = QLabel("Choose a folder of images and where the results go.")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.start_button.clicked.connect(lambda: self.start())
        self.cancel_button.clicked.connect(lambda: self.cancel())
        self.open_button.clicked.connect(lambda: self.open_results())

    def _folder_row(self, tip: str) -> tuple[QLineEdit, QWidget]:
        edit = QLineEdit()
        edit.setToolTip(tip)
        browse = QPushButton("Browse...")
        browse.clicked.connect(lambda: edit.setText(
            QFileDialog.getExistingDirectory(self, tip) or edit.text()))
        row = QWidget()
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(edit, 1)
        box.addWidget(browse)
        return edit, row

    def profile(self) -> ClusterProfile:
        return self.profile_combo.profile()

    def start(self):
        """Check the form, then upload, submit and follow (in workers)."""
        images, out = self.input_edit.text().strip(), self.out_edit.text().strip()
        if not images or not out:
            show_status(self.status, "Choose the images folder and a results folder first.",
                        error=True)
            return None
        try:
            profile = self.profile()
        except RaysamError as exc:
            return self._on_error(exc)
        self.open_button.setEnabled(False)
        self.progress_bar.reset()
        args = (profile, images, self.model_edit.text().strip() or "tiny_cells",
                self.workers_spin.value(), 1, self.index, self.head)
        return self._run(submit_apply, args, self.follow, "Uploading the images and submitting...")

    def follow(self, record) -> None:
        self.record = record
        self.cancel_button.setEnabled(True)
        show_status(self.status, f"Following {record.name}...")
        self.follower = follow_run(record, self.index, self.head, self._on_event, self._on_error)

    def _on_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.progress_bar.setRange(0, int(event.get("total") or 1))
            self.progress_bar.setValue(int(event.get("done") or 0))
            show_status(self.status, progress_text(event))
        elif kind == "status" and event.get("status") in TERMINAL:
            self.cancel_button.setEnabled(False)
            state = event["status"]
            if state == "FAILED":
                show_status(self.status, f"{self.record.name} failed: "
                            f"{(event.get('log_tail') or '')[-300:]}", error=True)
            self._fetch()
        elif kind == "error":
            show_status(self.status, event.get("message", ""), error=True)
            self.cancel_button.setEnabled(False)

    def _fetch(self):
        record = self.index.get(self.record.name)
        return self._run(fetch_applied, (record, self.out_edit.text().strip()), self._fetched,
                         "Fetching the label images...")

    def _fetched(self, dest) -> None:
        self.results = dest
        pairs = result_pairs(dest)
        self.open_button.setEnabled(bool(pairs))
        show_status(self.status, f"{len(pairs)} label image(s) and table.csv in {dest}.")

    def cancel(self):
        if self.record is None:
            return None
        return self._run(runs.cancel, (self.record, self.index, 15.0, self.head),
                         lambda rec: show_status(self.status, f"{rec.name}: {rec.state}; the "
                                                 "finished images are kept."), "Cancelling...")

    def open_results(self) -> int:
        """Add the first results as labels layers beside their images; returns how many."""
        import tifffile

        if self.results is None:
            return 0
        pairs = result_pairs(self.results, self.input_edit.text().strip())
        for name, image, labels in pairs[:MAX_OPENED]:
            if image is not None:
                self.viewer.add_image(tifffile.imread(image), name=name)
            self.viewer.add_labels(tifffile.imread(labels), name=f"{name} labels")
        shown = min(len(pairs), MAX_OPENED)
        more = f" (the first {shown} of {len(pairs)})" if len(pairs) > shown else ""
        show_status(self.status, f"Opened {shown} result(s){more}.")
        return shown

    def _run(self, func, args, done, message):
        return start_worker(self.workers, self.status, message, func, args, done, self._on_error)

    def _on_error(self, exc) -> None:
        show_status(self.status, str(exc), error=True)
        if not isinstance(exc, RaysamError):
            self.cancel_button.setEnabled(False)

    def _detach(self) -> None:
        detach_workers([*self.workers, self.follower])
