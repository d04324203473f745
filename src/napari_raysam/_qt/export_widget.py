"""Export dock: pair image layers with their Labels layers and write (or append to) a training set.

Preview validates everything (``plan_write``) and says what will be written; Export writes it
in a thread worker. Sparse annotation is fine: planes without objects are skipped and reported.
"""

from __future__ import annotations

import numpy as np
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
    WritePlan,
    execute_plan,
    is_training_set,
    plan_split_warning,
    plan_write,
    plane_axes,
    planes_to_inputs,
)
from napari_raysam.core.errors import RaysamError

ARROW = " \u2194 "
MODES = {"new training set": "new", "append to a training set": "append"}
PLANES = {"all annotated planes": "all", "only the current plane": "current"}
PLAN_HINT = "Preview shows what will be written."


def _layer_info(layer) -> tuple[int | None, tuple]:
    """(channel axis, shape without channels) of an image layer; RGB channels are last."""
    shape = tuple(layer.data.shape)
    axis = None if layer.rgb else layer.metadata.get("raysam_channel_axis")
    if axis is None:
        return None, shape[:-1] if layer.rgb else shape
    axis = int(axis) % len(shape)
    return axis, shape[:axis] + shape[axis + 1:]


def _labels_fit(image, labels) -> bool:
    """Labels have the image's shape without channels, or keep a length-1 channel axis (the
    Segment dock's objects layer of a Z,C,Y,X image does, to align with the image)."""
    axis, spatial = _layer_info(image)
    shape = tuple(labels.data.shape)
    return shape == spatial or (axis is not None and shape == spatial[:axis] + (1,) +
                                spatial[axis:])


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
        user's ticks are kept, other pairs get a default tick."""
        layers = list(self.viewer.layers)
        images = [la for la in layers if type(la).__name__ == "Image"]
        labels = [la for la in layers if type(la).__name__ == "Labels" and la.name != PREVIEW]
        pairs = [(im, lab) for im in images for lab in labels if _labels_fit(im, lab)]
        owner: dict[str, str] = {}  # labels name -> the longest image name it starts with
        for image, labels in sorted(pairs, key=lambda pair: len(pair[0].name)):
            if labels.name.startswith(image.name):
                owner[labels.name] = image.name
        labels_names = [la.name for _, la in pairs]
        default = set()  # per image: its own labels by name, else unclaimed unambiguous ones
        for image in dict.fromkeys(im for im, _ in pairs):
            rivals = [la.name for im, la in pairs if im.name == image.name]
            if any(self._checked.get((image.name, n)) for n in rivals):
                continue  # the user chose for this image
            mine = [n for n in rivals if owner.get(n) == image.name] or \
                [n for n in rivals if n not in owner and labels_names.count(n) == 1]
            committed = f"{image.name} objects"  # what the Segment dock commits into
            mine = [committed] if committed in mine else mine
            default.update((image.name, n) for n in mine[:1])
        self.pair_list.blockSignals(True)
        self.pair_list.clear()
        for image, labels in pairs:
            key = (image.name, labels.name)
            checked = self._checked.get(key, key in default)
            item = QListWidgetItem(image.name + ARROW + labels.name)
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

    def _inputs(self) -> tuple[list, list[str]]:
        """Sample inputs of the checked pairs, and notes on planes skipped for having no objects."""
        pairs = self.selected_pairs()
        if not pairs:
            raise RaysamError("Nothing to export: check at least one image \u2194 labels pair.")
        current_only = PLANES[self.planes_combo.currentText()] == "current"
        inputs, notes = [], []
        for image_name, labels_name in pairs:
            image, labels = self.viewer.layers[image_name], self.viewer.layers[labels_name]
            channel_axis, planes = _layer_info(image)[0], "all"
            stack_axis = plane_axes(image.data.ndim, channel_axis, image.rgb)
            if current_only and stack_axis is not None:  # T, Z, ...: one plane per (t, z)
                step = self.viewer.dims.current_step[-image.ndim:]
                planes = int(step[stack_axis]) if isinstance(stack_axis, int) else \
                    tuple(int(step[a]) for a in stack_axis)
            names = image.metadata.get("channel_names")
            found, skipped = planes_to_inputs(image.data, labels.data, image_name, stack_axis,
                                              channel_axis, planes, list(names) if names else None)
            for inp in found:  # copies: painting during the export must not change the files
                inp.image, inp.labels = np.array(inp.image), np.array(inp.labels)
            inputs += found
            if skipped:
                notes.append(f"{image_name}: plane(s) {', '.join(map(str, skipped))} have no "
                             "objects (skipped)")
        return inputs, notes

    def preview(self) -> WritePlan | None:
        """Validate the form and every pair; show what Export will write (nothing is written)."""
        self.refresh_pairs()  # layers may have been renamed or reshaped since
        try:
            dest = self.dest_edit.text().strip()
            if not dest:
                raise RaysamError("Choose a destination folder for the training set.")
            inputs, notes = self._inputs()
            plan = plan_write(dest, inputs, mode=MODES[self.mode_combo.currentText()])
        except RaysamError as exc:
            self.plan_label.setText("")
            show_status(self.status, str(exc), error=True)
            return None
        duplicates = [f"duplicate: {d}" for d in plan.duplicates]
        no_val = plan_split_warning(plan, self.seed_spin.value(), self.val_spin.value())
        self.plan_label.setText("\n".join([f"Will {plan.summary()}.", *notes, *duplicates,
                                           *([no_val] if no_val else [])]))
        if no_val:  # said before writing: exporting is allowed, but nothing is held out
            show_status(self.status, f"Warning: {no_val}", warning=True)
        else:
            show_status(self.status, "Ready to export.")
        return plan

    def export(self):
        """Preview, then write the plan in a thread worker; returns the worker (None on error)."""
        if self.worker is not None:
            show_status(self.status, "An export is already running.", error=True)
            return None
        plan = self.preview()
        if plan is None:
            return None
        seed, val_fraction = self.seed_spin.value(), self.val_spin.value()
        show_status(self.status, f"Writing {plan.n_samples} sample(s) to {plan.dest}...")
        self.export_button.setEnabled(False)
        self._on_progress(0, plan.n_samples)
        self.worker = run_in_worker(execute_plan, (plan, seed, val_fraction, self.progress.emit),
                                    self._on_done, self._on_error, self._on_finished)
        return self.worker

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

    def _on_finished(self):
        self.worker = None
        self.export_button.setEnabled(True)

    def _on_progress(self, done: int, total: int):
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
