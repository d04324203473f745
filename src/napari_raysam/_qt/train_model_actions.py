"""The Train dock's actions on the fetched model: use it in the Segment dock, export it for
bioimage.io, evaluate it on a test set (a mixin of TrainWidget; all file work in workers)."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog

from napari_raysam._qt._common import SAM_MODULES, preload, show_status
from napari_raysam._qt._dock import find_dock
from napari_raysam.core.runs.compare import compare_on_set
from napari_raysam.core.runs.text import model_label
from napari_raysam.core.sam.export import export_bioimageio, resolve_export_source


class ModelActions:
    """Use, export and evaluate ``self.model`` (set by the Train dock once a run is fetched)."""

    def use_in_segment(self) -> bool:
        """Make the fine-tuned checkpoint the Segment dock's model."""
        if self.model is None:
            return False
        segment = find_dock(self.viewer, "use_model")
        if segment is None:
            show_status(self.status, f"Open the Segment dock and pick run:{self.model.name}.")
            return False
        segment.use_model(f"run:{self.model.name}")
        show_status(self.status, f"The Segment dock now uses {model_label(self.model)}.")
        return True

    def export_model(self):
        """Share the fetched model as a bioimage.io package: check it can be exported (tiny
        models cannot), ask where, then export and test it; all file work in workers."""
        if self.model is None:
            return None
        return self._run(resolve_export_source, (f"run:{self.model.name}",),
                         self._ask_export_path, "Checking the model...")

    def _ask_export_path(self, source) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export for bioimage.io", str(Path.home() / f"{self.model.name}.zip"),
            "bioimage.io package (*.zip)")
        if not path:
            show_status(self.status, "Export cancelled.")
            return
        confirmed = path.lower().endswith(".zip")  # the dialog asked before replacing it
        path = path if confirmed else path + ".zip"
        self._run(lambda: export_bioimageio(source, path, overwrite=confirmed), (),
                  self._exported,
                  f"Exporting {source.spec} for bioimage.io: micro-sam runs the model on a "
                  "test image, then bioimage.io tests the package (minutes on a CPU)...")

    def _exported(self, result) -> None:
        show_status(self.status, f"Wrote {result.path} ({result.size_bytes / 1e6:.0f} MB, "
                    f"bioimage.io test {result.validation}): ready to upload to bioimage.io."
                    + (f" {result.note}" if result.note else ""))

    def evaluate_test_set(self, folder: str | None = None):
        """Score the base model and the fetched fine-tuned one on a test set (any training set
        of ours, ``folder`` or asked for), in a worker; the result and verdict are shown."""
        if self.model is None:
            show_status(self.status, "No fine-tuned model to evaluate yet: fetch a finished run "
                        "first (Fetch), then evaluate it on a test set.", error=True)
            return None
        folder = folder or QFileDialog.getExistingDirectory(
            self, "Choose a test set (a training-set folder)", self.dataset_edit.text().strip())
        if not folder:
            show_status(self.status, "Evaluation cancelled.")
            return None
        preload(SAM_MODULES)  # torch and SAM: imported by a worker they would stall napari
        base, tuned = self.model.base_model, f"run:{self.model.name}"
        self.evaluate_button.setEnabled(False)
        self.evaluation.setText("")
        scored = self.model  # a result for a model replaced meanwhile is dropped
        self.evaluating = self._run(
            compare_on_set, (base, tuned, folder),
            lambda result: self._evaluated(result) if self.model is scored else None,
            f"Evaluating {base} and {tuned} on {folder} (base, then fine-tuned)...",
            finished=self._evaluation_ended)
        return self.evaluating

    def _evaluated(self, comparison) -> None:
        self.evaluation.setText(comparison.text())
        show_status(self.status, comparison.headline(), warning=comparison.verdict == "worse")

    def _evaluation_ended(self) -> None:
        self.evaluating = None
        self.evaluate_button.setEnabled(self.model is not None)
