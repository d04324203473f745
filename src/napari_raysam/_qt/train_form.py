"""The Train dock's widgets and their layout (the dock itself wires them: train_widget.py)."""

from __future__ import annotations

from qtpy.QtCore import Qt
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
)

from napari_raysam._qt._common import spin
from napari_raysam._qt._dock import scroll_body
from napari_raysam._qt.metrics_plot import MetricsPlot
from napari_raysam.core.training.config import LR_SCALINGS, LR_SCHEDULES, MODES

NOT_CONNECTED = "Not connected."


class TrainForm:
    """Builds the Train dock's widgets as attributes of the dock, in a scrolling body."""

    def _build_form(self) -> None:
        self.profile_combo = QComboBox()
        self.address_edit = QLineEdit()
        self.token_env_edit = QLineEdit()
        self.token_env_edit.setPlaceholderText("name of the env var holding the token")
        self.storage_edit = QLineEdit()
        self.storage_edit.setPlaceholderText("shared folder, s3:// or gs:// (local: default)")
        self.save_profile_button = QPushButton("Save profile")
        self.connect_button = QPushButton("Connect")
        self.stop_local_button = QPushButton("Stop local cluster")
        self.summary = QLabel(NOT_CONNECTED)
        self.summary.setWordWrap(True)

        self.dataset_edit = QLineEdit()
        self.last_export_button = QPushButton("Use last export")
        self.model_edit = QLineEdit()
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(MODES)
        self.epochs = spin(QSpinBox, 0, 10_000, 0)  # 0: sized from the training set
        self.epochs.setSpecialValueText("auto")
        self.epochs.setToolTip("auto: sized from the training set (at least 100 samples per "
                               "epoch, micro-sam's rule; 5-20 epochs)")
        self.patience = spin(QSpinBox, 0, 10_000, 0)  # 0: no early stopping
        self.patience.setSpecialValueText("off")
        self.patience.setToolTip("end the run after this many epochs without a better val box "
                                 "mIoU; the best epoch is returned either way")
        self.schedule_combo = QComboBox()
        self.schedule_combo.addItems(LR_SCHEDULES)
        self.schedule_combo.setToolTip("plateau: micro-sam's schedule, the learning rate x0.9 "
                                       "after 3 epochs without a better val box mIoU")
        self.scaling_combo = QComboBox()
        self.scaling_combo.addItems(LR_SCALINGS)
        self.scaling_combo.setToolTip("with W workers each step averages W workers' gradients: "
                                      "none keeps the learning rate (micro-sam's recipe); "
                                      "sqrt or linear multiply it by sqrt(W) or W")
        self.workers_spin = spin(QSpinBox, 1, 1024, 1)
        self.gpus = spin(QDoubleSpinBox, 0, 16, 0, step=0.5, decimals=2)
        self.lr = spin(QDoubleSpinBox, 1e-6, 1.0, 1e-4, step=1e-4, decimals=6)
        self.objects = spin(QSpinBox, 1, 256, 8)
        self.start_button = QPushButton("Start")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.runs_combo = QComboBox()  # "[STATE] run-name", the full name always readable
        self.runs_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.runs_combo.view().setTextElideMode(Qt.TextElideMode.ElideMiddle)
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
        self.export_button = QPushButton("Export for bioimage.io\u2026")
        self.export_button.setToolTip("Write the fetched model as a bioimage.io package (.zip) "
                                      "with its lineage; vit_t/b/l/h models only")
        self.export_button.setEnabled(False)
        self.auto_use = QCheckBox("Use in Segment when done")
        self.evaluate_button = QPushButton("Evaluate on test set\u2026")
        self.evaluate_button.setToolTip(
            "Score the base model and the fetched one on a training-set folder (its held-out "
            "val split, or all of a set made with --val-fraction 0 or 1): point, box and "
            "corrected mIoU, and the verdict")
        self.evaluate_button.setEnabled(False)
        self.evaluation = QLabel("")  # the last test-set evaluation
        self.evaluation.setWordWrap(True)
        self.evaluation.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

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
                              ("Epochs", self.epochs), ("Early stop", self.patience),
                              ("Workers", self.workers_spin), ("GPUs/worker", self.gpus),
                              ("Learning rate", self.lr), ("LR schedule", self.schedule_combo),
                              ("LR x workers", self.scaling_combo),
                              ("Objects/image", self.objects)):
            form.addRow(label, widget)
        run_row = QHBoxLayout()
        for widget in (self.start_button, self.cancel_button, self.reattach_button,
                       self.fetch_button):
            run_row.addWidget(widget)
        runs_row = QHBoxLayout()  # a row of its own: "[STATE] run-name" needs the width
        runs_row.addWidget(QLabel("Runs"))
        runs_row.addWidget(self.runs_combo, 1)
        layout = scroll_body(self)
        layout.addLayout(cluster)
        layout.addLayout(row)
        layout.addWidget(self.summary)
        layout.addLayout(form)
        layout.addLayout(run_row)
        layout.addLayout(runs_row)
        for widget in (self.progress_bar, self.status, self.plot, self.result):
            layout.addWidget(widget)
        model_row = QHBoxLayout()  # the fetched model: use it here, or share it
        model_row.addWidget(self.use_button)
        model_row.addWidget(self.export_button)
        layout.addLayout(model_row)
        eval_row = QHBoxLayout()
        eval_row.addWidget(self.evaluate_button)
        eval_row.addStretch(1)
        layout.addLayout(eval_row)
        for widget in (self.evaluation, self.auto_use, self.log_box):
            layout.addWidget(widget)



def run_tip(record) -> str:
    """A run's tooltip in the run list: its full name, state, when, and why it ended."""
    lines = [record.name, f"state: {record.state}", f"submitted: {record.submitted}"]
    return "\n".join(lines + ([record.message] if record.message else []))
