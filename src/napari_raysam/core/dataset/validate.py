"""Check a training set on disk and report every problem instead of raising."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_raysam.core.dataset.format import (
    IMAGES_DIR,
    LABELS_DIR,
    MANIFEST,
    SPLITS,
    SampleRecord,
    TrainingSet,
    open_dataset,
    sha256_bytes,
    unreadable_tiff,
)
from napari_raysam.core.errors import RaysamError


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_dataset`; ``ok`` when ``problems`` is empty."""

    path: Path
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: str = ""
    dataset: TrainingSet | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = [self.summary]
        lines += [f"problem: {p}" for p in self.problems]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _read_tiff(path: Path, expected_sha: str, problems: list[str]) -> np.ndarray | None:
    import tifffile

    if not path.is_file():
        problems.append(f"{path}: file missing.")
        return None
    data = path.read_bytes()
    actual = sha256_bytes(data)
    if actual != expected_sha:
        problems.append(
            f"{path}: sha256 {actual[:12]}... does not match the manifest ({expected_sha[:12]}...)."
        )
    try:
        return tifffile.imread(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a reportable problem
        problems.append(str(unreadable_tiff(path, exc)))  # not the decoder's text (bytes)
        return None


def _check_record(ts: TrainingSet, r: SampleRecord, problems: list[str]) -> None:
    where = f"sample {r.id}"
    if r.split not in SPLITS:
        problems.append(f"{where}: split {r.split!r} is not one of {list(SPLITS)}.")
    image = _read_tiff(ts.path / r.image, r.image_sha256, problems)
    labels = _read_tiff(ts.path / r.labels, r.labels_sha256, problems)
    if image is not None:
        if list(image.shape) != list(r.shape):
            problems.append(f"{where}: image shape {image.shape} != manifest {tuple(r.shape)}.")
        if str(image.dtype) != r.dtype:
            problems.append(f"{where}: image dtype {image.dtype} != manifest {r.dtype}.")
    if labels is None:
        return
    if str(labels.dtype) != r.labels_dtype or labels.dtype not in (np.uint16, np.uint32):
        problems.append(
            f"{where}: labels dtype {labels.dtype} (manifest {r.labels_dtype}); expected uint16 "
            "or uint32."
        )
    if image is not None and list(image.shape) == list(r.shape):
        if labels.shape != r.spatial_shape:
            problems.append(
                f"{where}: labels shape {labels.shape} does not match the image's "
                f"{r.spatial_shape}."
            )
    n = int(np.count_nonzero(np.unique(labels))) if labels.size else 0
    if n != r.n_objects:
        problems.append(f"{where}: labels hold {n} objects, the manifest says {r.n_objects}.")
    if n == 0:
        problems.append(f"{where}: labels hold no objects.")


def _debris_note(d) -> str:
    """One non-fatal note per interrupted export (``debris.Debris``), with the fix."""
    if d.writer == "dead":
        fix = (f"the next export or append into {d.path.parent} removes it, or delete it "
               "(no training set uses it)")
    elif d.writer == "running":
        fix = "leave it while that export runs; if none is running, delete it"
    else:
        fix = "if no export is running (on any computer), delete it"
    if d.kind == "append" and d.token:
        fix += f": images/*-{d.token}.tif, labels/*-{d.token}.tif and {d.path.name}"
    return f"{d.describe()}; {fix}."


def _extra_files(ts: TrainingSet, warnings: list[str]) -> None:
    """Notes on debris of interrupted exports; other files the manifest does not list."""
    from napari_raysam.core.dataset.debris import find_debris

    debris = find_debris(ts.path.parent, name=ts.path.name, dataset=ts.path)
    claimed = {p for d in debris for p in d.files}
    warnings += [_debris_note(d) for d in debris]
    listed = {Path(r.image).as_posix() for r in ts.samples} | {
        Path(r.labels).as_posix() for r in ts.samples
    }
    stray = []
    for sub in (IMAGES_DIR, LABELS_DIR):
        folder = ts.path / sub
        if not folder.is_dir():
            continue
        stray += [p for p in sorted(folder.iterdir())
                  if f"{sub}/{p.name}" not in listed and p not in claimed]
    for p in stray[:5]:
        warnings.append(
            f"{p}: not listed in {MANIFEST} (left by an interrupted export?); it is "
            "ignored and can be deleted."
        )
    if len(stray) > 5:
        warnings.append(f"... and {len(stray) - 5} more file(s) not listed in {MANIFEST} in "
                        f"{ts.path}; they are ignored and can be deleted.")


def _orphan_temp_folders(path: Path, warnings: list[str]) -> None:
    """A killed new export leaves only a hidden temp folder beside the name it never got."""
    from napari_raysam.core.dataset.debris import find_debris

    try:
        path = path.absolute()
        warnings += [_debris_note(d) for d in find_debris(path.parent, name=path.name)]
    except OSError:
        pass


def validate_dataset(path: str | Path) -> ValidationReport:
    """Check schema, files, sha256 hashes, shapes, dtypes and object counts; never raises."""
    report = ValidationReport(path=Path(path))
    try:
        ts = open_dataset(path)
    except RaysamError as exc:
        report.problems.append(str(exc))
        report.summary = f"{path}: not a valid training set."
        _orphan_temp_folders(Path(path), report.warnings)
        return report
    except Exception as exc:  # noqa: BLE001 - report, never raise
        report.problems.append(f"{path}: cannot open the training set ({exc}).")
        report.summary = f"{path}: not a valid training set."
        return report
    report.dataset = ts
    problems = report.problems
    ids = [r.id for r in ts.samples]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        problems.append(f"sample ids used more than once: {dupes}.")
    if not ts.samples:
        problems.append("the training set has no samples.")
    for r in ts.samples:
        try:
            _check_record(ts, r, problems)
        except Exception as exc:  # noqa: BLE001 - report, never raise
            problems.append(f"sample {r.id}: cannot be checked ({exc}).")
    if ts.manifest_content_hash != ts.content_hash:
        problems.append(
            f"{MANIFEST}: content_hash {str(ts.manifest_content_hash)[:12]}... does not match its "
            f"samples ({ts.content_hash[:12]}...)."
        )
    try:
        _extra_files(ts, report.warnings)
    except OSError as exc:
        report.warnings.append(f"cannot list the data folders ({exc}).")
    if ts.split_warning and ts.samples:
        report.warnings.append(ts.split_warning)
    n_val = len(ts.split("val"))
    state = "valid" if report.ok else f"INVALID ({len(problems)} problem(s))"
    report.summary = (
        f"{ts.path}: {state}; {len(ts)} samples ({len(ts) - n_val} train, {n_val} val), "
        f"{ts.n_objects} objects, content hash {ts.content_hash[:16]}"
    )
    return report
