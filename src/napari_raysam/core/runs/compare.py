"""A fetched model against its base model on a test set the user chooses (the Train dock's
"Evaluate on test set..."): the evaluator of ``napari-raysam evaluate`` and the verdict rule of
report.json, so the dock, the CLI and the run's report agree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from napari_raysam.core.errors import RaysamError

#: The evaluator's score keys and how the result names them.
SCORE_LABELS = (("point", "miou_point"), ("box", "miou_box"), ("corrected", "miou_corrected"))


@dataclass
class SetComparison:
    """Base and fine-tuned rows of ``evaluate_models`` on one split of one set, and the verdict."""

    dataset: str
    split: str
    images: int
    base: dict
    tuned: dict
    verdict: str
    sentence: str

    def headline(self) -> str:
        """One status line: where, and the verdict."""
        from napari_raysam.core.training.report import VERDICT_LABELS

        return f"Evaluated on {self.dataset} ({self.split}): {VERDICT_LABELS[self.verdict]}."

    def text(self) -> str:
        """What the dock shows: where, base -> fine-tuned per score, the verdict."""
        from napari_raysam.core.training.report import BEST_METRIC_TEXT, VERDICT_LABELS

        where = ("its val split (held out)" if self.split == "val"
                 else "all of it (it has no val split)")
        lines = [f"Test set {Path(self.dataset).name}, {where}: {self.images} image(s), "
                 f"{self.tuned['objects']} object(s); mIoU {self.base['model']} -> "
                 f"{self.tuned['model']}:"]
        lines += [f"{label} {self.base[key]:.3f} -> {self.tuned[key]:.3f} "
                  f"({self.tuned[key] - self.base[key]:+.3f})" for label, key in SCORE_LABELS]
        lines.append(f"Verdict: {VERDICT_LABELS[self.verdict]} (decided by the box mIoU, as the "
                     f"{BEST_METRIC_TEXT} picks a run's checkpoint)."
                     + (f" {self.sentence}" if self.verdict == "worse" else ""))
        return "\n".join(lines)


def check_test_set(dataset: str | Path) -> tuple[str, str]:
    """(the set's folder, the split to score: :meth:`TrainingSet.evaluation_split`), or a
    :class:`RaysamError` saying what is wrong with the folder; reads manifest.json only."""
    from napari_raysam.core.dataset import is_training_set, open_dataset

    folder = str(dataset).strip()
    if not folder:
        raise RaysamError("Choose a test-set folder (a training set written by the Export dock "
                          "or `napari-raysam dataset create`).")
    if Path(folder).is_dir() and not is_training_set(folder):
        raise RaysamError(f"{folder} is not a napari-raysam training set (no manifest.json of "
                          "ours): choose a folder written by the Export dock or `napari-raysam "
                          "dataset create --val-fraction 1` (a test set).")
    ts = open_dataset(folder)  # names a missing folder or a damaged manifest
    split = ts.evaluation_split()
    records = ts.split(split)
    if not records:
        raise RaysamError(f"{folder} has no images to evaluate on (its {split!r} split is "
                          "empty): export annotated images into it, or choose another set.")
    if not sum(r.n_objects for r in records):
        raise RaysamError(f"{folder} has no annotated objects in its {split!r} split: annotate "
                          "some, or choose another set.")
    return str(ts.path), split


def compare_on_set(base: str, tuned: str, dataset: str | Path, rounds: int = 3
                   ) -> SetComparison:
    """Evaluate model spec ``base`` and fine-tuned ``tuned`` on ``dataset``'s evaluation split
    (checked first, before any model loads) and judge them with the verdict rule."""
    from napari_raysam.core.sam.evaluate import evaluate_models
    from napari_raysam.core.training.report import rows_verdict

    folder, split = check_test_set(dataset)
    base_row, tuned_row = evaluate_models([base, tuned], folder, split=split, rounds=rounds)
    if not tuned_row["objects"]:
        raise RaysamError(f"{folder}: no object in its {split!r} split is large enough to "
                          "score (at least 10 pixels); annotate larger objects.")
    kind, sentence = rows_verdict(base_row, tuned_row)
    return SetComparison(folder, split, int(tuned_row["images"]), base_row, tuned_row, kind,
                         sentence)
