"""Writing training sets: validate inputs, plan, then write atomically (new) or append.

See :mod:`napari_raysam.core.dataset` for the format and the atomicity guarantees, and
:mod:`napari_raysam.core.dataset.debris` for what a killed write leaves and who removes it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_raysam.core.dataset.debris import APPEND_MARKER, TMP_INFIX, sweep_debris, writer_tag
from napari_raysam.core.dataset.format import (
    IMAGES_DIR,
    LABELS_DIR,
    MANIFEST,
    DatasetError,
    SampleRecord,
    TrainingSet,
    content_hash,
    manifest_json,
    missing_split_text,
    now_iso,
    open_dataset,
    sha256_bytes,
)
from napari_raysam.core.dataset.inputs import (
    Mode,
    PreparedSample,
    SampleInput,
    planes_to_inputs,
    prepare_sample,
)

__all__ = ["WritePlan", "execute_plan", "plan_split_warning", "plan_write", "planned_splits",
           "planes_to_inputs", "write_dataset"]

@dataclass
class WritePlan:
    """What :func:`execute_plan` will write; built by :func:`plan_write` after all checks."""

    dest: Path
    mode: Mode
    samples: list[PreparedSample]
    existing: TrainingSet | None = None
    duplicates: list[str] = field(default_factory=list)  # inputs whose pixels are already there
    skipped: list[str] = field(default_factory=list)  # inputs that will not be written, and why

    @property
    def n_samples(self) -> int:
        return len(self.samples)

    @property
    def n_objects(self) -> int:
        return sum(p.n_objects for p in self.samples)

    def summary(self) -> str:
        action = f"append to {self.dest}" if self.existing else f"create {self.dest}"
        text = f"{action}: {self.n_samples} sample(s), {self.n_objects} object(s)"
        if self.existing:
            text += f" (the set has {len(self.existing)} sample(s) already)"
        if self.duplicates:
            text += f"; {len(self.duplicates)} duplicate image(s)"
        if self.skipped:
            text += f"; {len(self.skipped)} skipped"
        return text


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def _check_dest(dest: Path, mode: Mode) -> TrainingSet | None:
    if mode not in ("new", "append"):
        raise DatasetError(f"mode={mode!r}: use 'new' or 'append'.")
    if dest.exists() and not dest.is_dir():
        raise DatasetError(f"{dest} is a file; choose a folder for the training set.")
    existing = None
    if (dest / MANIFEST).exists():
        if mode == "new":
            raise DatasetError(
                f"{dest} already holds a training set; append to it (mode='append', --append) "
                "or choose a new folder."
            )
        existing = open_dataset(dest)
        need = [dest, dest / IMAGES_DIR, dest / LABELS_DIR]
    elif dest.is_dir():
        if any(dest.iterdir()):
            raise DatasetError(
                f"{dest} is not empty and is not a napari-raysam training set (no {MANIFEST}); "
                "choose a new or empty folder."
            )
        need = [dest.parent]
    else:
        ancestor = dest.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        need = [ancestor]
    for folder in need:
        if folder.is_dir() and not _writable(folder):
            raise DatasetError(
                f"{folder} is not writable; choose a destination you may write to or fix its "
                "permissions."
            )
    return existing


def plan_write(
    dest: str | Path,
    inputs: Sequence[SampleInput],
    mode: Mode = "new",
    allow_duplicates: bool = False,
) -> WritePlan:
    """Validate the destination and every input and say what will be written.

    Raises DatasetError (a RaysamError) before anything is written. Images whose pixels are
    already in the set (or earlier in ``inputs``) are listed in ``duplicates`` and, unless
    ``allow_duplicates``, skipped; nothing left to write is an error.
    """
    dest = Path(dest).absolute()
    existing = _check_dest(dest, mode)
    inputs = list(inputs)
    if not inputs:
        raise DatasetError("Nothing to export: pair at least one image with its labels.")
    prepared, errors = [], []
    for inp in inputs:
        try:
            prepared.append(prepare_sample(inp))
        except DatasetError as exc:
            errors.append(str(exc))
    if errors:
        more = f"\n- ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise DatasetError(
            f"{len(errors)} of {len(inputs)} sample(s) cannot be exported; nothing was written:\n"
            + "\n".join(f"- {e}" for e in errors[:10]) + more
        )
    plan = WritePlan(dest=dest, mode=mode, samples=[], existing=existing)
    known = {r.pixel_hash: f"sample {r.id} ({r.source})" for r in existing.samples} if existing \
        else {}
    for p in prepared:
        twin = known.get(p.pixel_hash)
        if twin is not None:
            note = f"{p.input.describe()}: same pixels as {twin}"
            plan.duplicates.append(note)
            if not allow_duplicates:
                plan.skipped.append(f"{note} (duplicate)")
                continue
        known.setdefault(p.pixel_hash, p.input.describe())
        plan.samples.append(p)
    if not plan.samples:
        raise DatasetError(
            f"Nothing new to write: all {len(prepared)} image(s) are already in {dest}. Pass "
            "allow_duplicates=True (--allow-duplicates) to add them again."
        )
    return plan


def _unit(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _assign_splits(plan: WritePlan, seed: int, val_fraction: float) -> list[str]:
    """Deterministic split per new sample: seeded permutation (new set) or seed + hash (append)."""
    n = plan.n_samples
    if plan.existing is None:
        order = sorted(range(n), key=lambda i: (plan.samples[i].pixel_hash, i))
        perm = np.random.default_rng(seed).permutation(n)
        if val_fraction <= 0 or val_fraction >= 1:  # all train, or all held out (a test set)
            n_val = n if val_fraction >= 1 else 0
        else:
            n_val = 0 if n < 2 else min(n - 1, max(1, round(val_fraction * n)))
        val = {order[i] for i in perm[:n_val]}
        return ["val" if i in val else "train" for i in range(n)]
    units = [_unit(seed, f"{p.pixel_hash}:{k}") for k, p in enumerate(plan.samples)]
    splits = ["val" if u < val_fraction else "train" for u in units]
    old = [r.split for r in plan.existing.samples]
    if 0 < val_fraction and len(old) + n >= 2 and "val" not in old + splits:
        splits[int(np.argmin(units))] = "val"
    if val_fraction < 1 and "train" not in old + splits:
        splits[int(np.argmax(units))] = "train"
    return splits


def planned_splits(plan: WritePlan, seed: int = 0, val_fraction: float = 0.2) -> list[str]:
    """The split ("train"/"val") each of ``plan``'s samples will get, exactly as
    :func:`execute_plan` assigns it (on append the set's own seed and val_fraction count)."""
    if plan.existing is not None:
        seed, val_fraction = plan.existing.seed, plan.existing.val_fraction
    return _assign_splits(plan, seed, val_fraction)


def plan_split_warning(plan: WritePlan, seed: int = 0, val_fraction: float = 0.2) -> str | None:
    """What the set will miss once ``plan`` is written (no val split, or no train split: a
    test set); None when it will have both.

    Said before anything is written (the Export dock's Preview): a set without held-out
    images (e.g. one image, or one plane of a stack) gives no before/after measure."""
    old = [r.split for r in plan.existing.samples] if plan.existing is not None else []
    if plan.existing is not None:
        val_fraction = plan.existing.val_fraction
    splits = old + planned_splits(plan, seed, val_fraction)
    return missing_split_text(len(splits), val_fraction, splits, planned=True)


def _tiff_bytes(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, photometric="minisblack", compression="zlib")
    return buffer.getvalue()


def _write_file(path: Path, data: bytes) -> None:
    """Write and fsync one file (tests patch this to simulate a full disk)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_error(exc: OSError, dest: Path) -> DatasetError:
    if exc.errno == errno.ENOSPC:
        problem = "the disk is full"
        fix = "free some space or export to another disk"
    else:
        problem = f"writing failed ({exc})"
        fix = "check the destination and try again"
    return DatasetError(f"Exporting to {dest}: {problem}; {fix}. Nothing was changed at {dest}.")


def execute_plan(
    plan: WritePlan,
    seed: int = 0,
    val_fraction: float = 0.2,
    progress: Callable[[int, int], None] | None = None,
) -> TrainingSet:
    """Write a :class:`WritePlan`; on append the set's own seed and val_fraction are used."""
    if not 0 <= val_fraction <= 1:
        raise DatasetError(f"val_fraction={val_fraction}: use a fraction from 0 to 1 (0: all "
                           "train, 1: all held out, a test set).")
    dest, existing = plan.dest, plan.existing
    if existing is not None:
        seed, val_fraction = existing.seed, existing.val_fraction
    splits = planned_splits(plan, seed, val_fraction)
    start = 1 + max((int(r.id[1:]) for r in existing.samples if r.id[1:].isdigit()), default=-1) \
        if existing else 0
    sweep_debris(dest)
    token = uuid.uuid4().hex[:8]
    tag = writer_tag(token)
    root = dest if existing else dest.parent / f".{dest.name}{TMP_INFIX}{tag}"
    marker = dest / f"{APPEND_MARKER}{tag}"
    # appended files carry the write's token: they can never overwrite a file another
    # (interrupted or concurrent) export wrote, so cleaning up only ever removes our own
    stem = "{}" if existing is None else "{}-" + token
    written: list[Path] = []
    committed = False
    tmp_manifest = root / f".{MANIFEST}.tmp-{token}"
    try:
        if existing is not None:
            marker.touch(exist_ok=False)  # before our first file: a sweeper sees we are alive
        for sub in (IMAGES_DIR, LABELS_DIR):
            (root / sub).mkdir(parents=True, exist_ok=True)
        records = []
        for k, (p, split) in enumerate(zip(plan.samples, splits, strict=True)):
            sid = f"s{start + k:05d}"
            name = stem.format(sid) + ".tif"
            shas = []
            for sub, array in ((IMAGES_DIR, p.image), (LABELS_DIR, p.labels)):
                data = _tiff_bytes(array)
                path = root / sub / name
                written.append(path)
                _write_file(path, data)
                shas.append(sha256_bytes(data))
            records.append(SampleRecord(
                id=sid, image=f"{IMAGES_DIR}/{name}", labels=f"{LABELS_DIR}/{name}",
                shape=list(p.image.shape), dtype=str(p.image.dtype),
                labels_dtype=str(p.labels.dtype), channel_axis=p.channel_axis,
                channel_names=p.channel_names, image_sha256=shas[0], labels_sha256=shas[1],
                pixel_hash=p.pixel_hash, n_objects=p.n_objects, split=split,
                source=p.input.source, plane=p.input.plane, created=now_iso(),
            ))
            if progress is not None:
                progress(k + 1, plan.n_samples)
        samples = (existing.samples if existing else []) + records
        ts = TrainingSet(
            path=dest, schema_version=existing.schema_version if existing else 1,
            created=existing.created if existing else now_iso(), seed=int(seed),
            val_fraction=float(val_fraction), samples=samples,
            manifest_content_hash=content_hash(samples),
        )
        _write_file(tmp_manifest, manifest_json(ts).encode())
        if existing is not None and open_dataset(dest).content_hash != existing.content_hash:
            raise DatasetError(
                f"{dest} changed while exporting (another export?); nothing was added. Try again."
            )
        _fsync_dir(root / IMAGES_DIR)
        _fsync_dir(root / LABELS_DIR)
        os.replace(tmp_manifest, root / MANIFEST)  # the commit point of an append
        committed = existing is not None
        if existing is None:
            if dest.is_dir():
                dest.rmdir()  # an empty folder the user chose
            os.replace(root, dest)  # the commit point of a new set
            committed = True
        _fsync_dir(dest.parent if existing is None else dest)
    except BaseException as exc:
        if committed:
            raise
        if existing is None:
            shutil.rmtree(root, ignore_errors=True)
        else:
            for path in [*written, tmp_manifest]:
                path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_error(exc, dest) from exc
        raise
    finally:
        if existing is not None:
            marker.unlink(missing_ok=True)
    return open_dataset(dest)


def write_dataset(
    dest: str | Path,
    inputs: Sequence[SampleInput],
    mode: Mode = "new",
    seed: int = 0,
    val_fraction: float = 0.2,
    allow_duplicates: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> TrainingSet:
    """Validate (:func:`plan_write`) and write a training set; returns the opened set."""
    plan = plan_write(dest, inputs, mode=mode, allow_duplicates=allow_duplicates)
    return execute_plan(plan, seed=seed, val_fraction=val_fraction, progress=progress)
