"""Export dock: pair image layers with their Labels layers and write (or append to) a training set.

Preview checks everything (``plan_pairs``: copies, checks and hashes every plane) in a thread
worker and says what will be written; Export does the same, then writes it in another worker.
The form is disabled meanwhile. Which pairs are offered and ticked is ``core.dataset.pairs``.
Sparse annotation is fine: planes without objects are skipped and reported.
"""

from __future__ import annotations

import math

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from napari_raysam._qt._common import DockLifetime, ViewerHooks, run_in_worker, show_status
from napari_raysam._qt._dock import scroll_body
from napari_raysam._qt.gc_pauses import QuietCollector
from napari_raysam._qt.prompt_layers import PREVIEW
from napari_raysam.core.dataset import (
    ImageLayer,
    LabelsLayer,
    PairSource,
    PairsPlan,
    WritePlan,
    default_pairs,
    execute_plan,
    fitting_pairs,
    is_training_set,
    plan_pairs,
    plane_axes,
)
from napari_raysam.core.errors import RaysamError

ARROW = " \u2194 "
MODES = {"new training set": "new", "append to a training set": "append"}
PLANES = {"all annotated planes": "all", "only the current plane": "current"}
PLAN_HINT = "Preview shows what will be written."


def describe(layer) -> ImageLayer:
    """The pairing rules' view of a napari image layer."""
    return ImageLayer(layer.name, tuple(layer.data.shape), bool(layer.rgb),
                      layer.metadata.get("raysam_channel_axis"))


def _n_planes(layer: ImageLayer) -> int:
    axes = plane_axes(len(layer.shape), layer.channels, layer.rgb)
    axes = () if axes is None else (axes,) if isinstance(axes, int) else axes
    return math.prod(layer.shape[a] for a in axes)


def _key(item) -> tuple[str, str]:
    return tuple(item.data(Qt.ItemDataRole.UserRole))


class ExportWidget(DockLifetime, QWidget):
    """The Export dock."""

    progress = Signal(int, int)
    exported = Signal(str)  # the path of the set just written (for the Train dock)

    def __init__(self, napari_viewer):
        super().__init__()
        self.hooks = ViewerHooks()  # released when the dock is closed
        self.quiet_gc = QuietCollector(napari_viewer, self.hooks)
        self.viewer = napari_viewer
        self.worker = None
        self.last_export_path: str | None = None
        self.plan: WritePlan | None = None  # the last Preview's plan (not Export's)
        self._job = 0
        self._checked: dict[tuple[str, str], bool] = {}

        self.pair_list = QListWidget()
        self.dest_edit = QLineEdit()
        self.dest_edit.setPlaceholderText("folder for the training set")
        self.browse_button = QPushButton("Browse...")
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(MODES)
        self.planes_combo = QComboBox()
        self.planes_combo.addItems(PLANES)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.val_spin = QDoubleSpinBox()
        self.val_spin.setRange(0.05, 0.95)
        self.val_spin.setValue(0.2)
        self.preview_button = QPushButton("Preview")
        self.export_button = QPushButton("Export")
        self.progress_bar = QProgressBar()
        self.plan_label = QLabel(PLAN_HINT)
        self.status = QLabel("Check the image/labels pairs to export and choose a folder.")
        for label in (self.plan_label, self.status):
            label.setWordWrap(True)
        self._form = (self.pair_list, self.dest_edit, self.browse_button, self.mode_combo,
                      self.planes_combo, self.seed_spin, self.val_spin, self.preview_button,
                      self.export_button)  # disabled while a worker plans or writes

        dest_row = QHBoxLayout()
        dest_row.addWidget(self.dest_edit)
        dest_row.addWidget(self.browse_button)
        form = QFormLayout()
        form.addRow("Destination", dest_row)
        form.addRow("Mode", self.mode_combo)
        form.addRow("Stacks", self.planes_combo)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Val fraction", self.val_spin)
        buttons = QHBoxLayout()
        for button in (self.preview_button, self.export_button):
            buttons.addWidget(button)
        layout = scroll_body(self)
        layout.addWidget(QLabel("Image \u2194 labels pairs (same shape):"))
        layout.addWidget(self.pair_list)
        layout.addLayout(form)
        layout.addLayout(buttons)
        for widget in (self.progress_bar, self.plan_label, self.status):
            layout.addWidget(widget)
        layout.addStretch()

        self.browse_button.clicked.connect(self.browse)
        self.preview_button.clicked.connect(lambda: self.preview())
        self.export_button.clicked.connect(lambda: self.export())
        self.pair_list.itemChanged.connect(self._on_tick)
        self.progress.connect(self._on_progress)
        events = napari_viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            self.hooks.connect(event, self.refresh_pairs)
        self.refresh_pairs()

    def refresh_pairs(self, _event=None):
        """List (image, labels) layers whose shapes match (image minus its channel axis); the
        user's ticks are kept, other pairs get a default tick (:func:`default_pairs`)."""
        layers = list(self.viewer.layers)
        images = [describe(la) for la in layers if type(la).__name__ == "Image"]
        labels = [LabelsLayer(la.name, tuple(la.data.shape)) for la in layers
                  if type(la).__name__ == "Labels" and la.name != PREVIEW]
        pairs = fitting_pairs(images, labels)
        default = default_pairs(pairs, self._checked)
        self.pair_list.blockSignals(True)
        self.pair_list.clear()
        for key in pairs:
            checked = self._checked.get(key, key in default)
            item = QListWidgetItem(key[0] + ARROW + key[1])
            item.setData(Qt.ItemDataRole.UserRole, key)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
            self.pair_list.addItem(item)
        self.pair_list.blockSignals(False)

    def _on_tick(self, item):
        self._checked[_key(item)] = item.checkState() == Qt.CheckState.Checked

    def set_pair_checked(self, image_name: str, labels_name: str, checked: bool) -> None:
        text = image_name + ARROW + labels_name
        items = self.pair_list.findItems(text, Qt.MatchFlag.MatchExactly)
        if not items:
            raise KeyError(f"No pair {image_name!r} / {labels_name!r} is offered.")
        items[0].setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def selected_pairs(self) -> list[tuple[str, str]]:
        items = [self.pair_list.item(row) for row in range(self.pair_list.count())]
        return [_key(it) for it in items if it.checkState() == Qt.CheckState.Checked]

    def browse(self):
        folder = QFileDialog.getExistingDirectory(self, "Training set", self.dest_edit.text())
        if folder:
            self.dest_edit.setText(folder)
            if is_training_set(folder):
                self.mode_combo.setCurrentIndex(list(MODES.values()).index("append"))

    def sources(self) -> list[PairSource]:
        """The checked pairs' layer data (not copied: :func:`plan_pairs` does that in a
        worker); the current plane only when the form says so."""
        current_only = PLANES[self.planes_combo.currentText()] == "current"
        sources = []
        for image_name, labels_name in self.selected_pairs():
            image, labels = self.viewer.layers[image_name], self.viewer.layers[labels_name]
            names = image.metadata.get("channel_names")
            step = tuple(self.viewer.dims.current_step[-image.ndim:]) if current_only else None
            sources.append(PairSource(image.data, labels.data, describe(image), step,
                                      list(names) if names else None))
        return sources

    def preview(self):
        """Check the form and every pair in a worker and show what Export will write (nothing
        is written); the plan lands in ``self.plan``. Returns the worker, None on an error
        found before it starts."""
        return self._start_plan(write=False)

    def export(self):
        """Preview, then write the plan, each in a worker; returns the first worker (None on
        an error found before it starts)."""
        return self._start_plan(write=True)

    def _start_plan(self, write: bool):
        if self.worker is not None:
            show_status(self.status, "A preview or export is still running.", error=True)
            return None
        self.refresh_pairs()  # layers may have been renamed or reshaped since
        self.plan = None
        try:
            dest = self.dest_edit.text().strip()
            if not dest:
                raise RaysamError("Choose a destination folder for the training set.")
            sources = self.sources()
            if not sources:
                raise RaysamError("Nothing to export: check at least one image \u2194 labels "
                                  "pair.")
        except RaysamError as exc:
            self._on_plan_error(exc)
            return None
        args = (dest, sources, MODES[self.mode_combo.currentText()], self.seed_spin.value(),
                self.val_spin.value())
        n_planes = sum(1 if s.step is not None else _n_planes(s.layer) for s in sources)
        show_status(self.status, f"Checking {n_planes} plane(s) of {len(sources)} pair(s)...")
        self.progress_bar.setRange(0, 0)
        return self._run(plan_pairs, args, lambda result: self._on_planned(result, write),
                         self._on_plan_error)

    def _on_planned(self, result: PairsPlan, write: bool) -> None:
        plan = result.plan
        self.plan = None if write else plan  # it holds copies of every plane: not kept
        self.plan_label.setText(result.text())
        self.progress_bar.setRange(0, 1)
        if result.split_warning:  # said before writing: exporting is allowed, nothing held out
            show_status(self.status, f"Warning: {result.split_warning}", warning=True)
        else:
            show_status(self.status, "Ready to export.")
        if not write:
            return
        show_status(self.status, f"Writing {plan.n_samples} sample(s) to {plan.dest}...")
        self._on_progress(0, plan.n_samples)
        self._run(execute_plan, (plan, self.seed_spin.value(), self.val_spin.value(),
                                 self.progress.emit), self._on_done, self._on_error)

    def _on_plan_error(self, exc) -> None:
        self.plan_label.setText("")
        self.progress_bar.setRange(0, 1)
        show_status(self.status, str(exc), error=True)

    def _run(self, func, args, done, error):
        """One worker at a time; the form is disabled while it runs (a finished worker may
        already have started the next one: only the last one's end enables it again)."""
        self._busy(True)
        self._job += 1
        job = self._job
        self.worker = run_in_worker(func, args, done, error, lambda: self._on_finished(job))
        return self.worker

    def _busy(self, busy: bool) -> None:
        for widget in self._form:
            widget.setEnabled(not busy)

    def _on_done(self, training_set):
        ts, path = training_set, str(training_set.path)
        text = (f"Exported to {path}: {len(ts)} sample(s) ({len(ts.split('train'))} train / "
                f"{len(ts.split('val'))} val), {ts.n_objects} object(s), content "
                f"{ts.content_hash[:12]}." + (f"\n{ts.split_warning}" if ts.split_warning else ""))
        self.last_export_path = path
        self.plan_label.setText(PLAN_HINT)  # the plan is done: "Will create ..." is history
        show_status(self.status, text, warning=bool(ts.split_warning))
        self.exported.emit(path)

    def _on_error(self, exc):
        show_status(self.status, str(exc), error=True)

    def _on_finished(self, job: int):
        if job != self._job:
            return  # a later worker (the write after the plan) is running
        self.worker = None
        self._busy(False)

    def _on_progress(self, done: int, total: int):
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
