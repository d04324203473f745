"""Training-set format: manifest records, opening, reading and validating a set on disk.

See :mod:`napari_raysam.core.dataset` for the format description and the public API.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.images import ImagePolicy, to_sam_rgb

#: Manifest schema written by this code; newer ones are refused with a hint to upgrade.
SCHEMA_VERSION = 1
#: Marker that tells a napari-raysam training set from any other folder with a manifest.json.
FORMAT_NAME = "napari-raysam-training-set"
MANIFEST = "manifest.json"
IMAGES_DIR = "images"
LABELS_DIR = "labels"
SPLITS = ("train", "val")


class DatasetError(RaysamError, ValueError):
    """A training set that cannot be written or read; the message says why and what to do."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class SampleRecord:
    """One sample of the manifest: a 2D (+channels) image file and its instance-labels file."""

    id: str
    image: str  # file path relative to the set, e.g. "images/s00000.tif"
    labels: str
    shape: list[int]  # image shape as stored (channels included)
    dtype: str  # image dtype
    labels_dtype: str
    channel_axis: int | None  # axis of `shape` holding channels; None: grayscale or RGB(A) last
    channel_names: list[str]
    image_sha256: str
    labels_sha256: str
    pixel_hash: str  # images.pixel_hash of the image array (duplicate detection)
    n_objects: int
    split: str
    source: str  # layer name or original file path
    plane: int | None  # plane index within the source stack, None for a 2D source
    created: str

    @property
    def spatial_shape(self) -> tuple[int, int]:
        """(H, W) of the image, i.e. the labels' shape."""
        shape = list(self.shape)
        if self.channel_axis is not None:
            del shape[self.channel_axis]
        return tuple(shape[:2])

    @property
    def sample_hash(self) -> str:
        """sha256 of both files' hashes and the split: what this sample contributes to training."""
        return sha256_bytes(f"{self.image_sha256}\n{self.labels_sha256}\n{self.split}".encode())

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SampleRecord:
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise DatasetError(
                f"Sample {data.get('id', '?')!r} in {MANIFEST} lacks {missing}: the manifest is "
                "damaged or was edited by hand; restore it or export the training set again."
            )
        record = cls(**{n: data[n] for n in names})
        for rel in (record.image, record.labels):
            _check_relative(rel, record.id)
        return record


def _outside(sample_id, rel) -> DatasetError:
    return DatasetError(
        f"Sample {str(sample_id)[:80]!r} in {MANIFEST} refers to {str(rel)[:200]!r}, which is "
        "outside the training set's folder; a training set only uses files inside its folder, "
        "so nothing was opened. The manifest is damaged or not from napari-raysam: export the "
        "training set again."
    )


def _check_relative(rel, sample_id) -> None:
    """``rel`` must be a plain relative path inside the set: not absolute (POSIX or Windows,
    drive letters included), no ``..``, no backslashes (the writer uses ``/``). No I/O."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel:
        raise _outside(sample_id, rel)
    posix, windows = PurePosixPath(rel), PureWindowsPath(rel)
    if posix.is_absolute() or windows.drive or windows.root or ".." in posix.parts:
        raise _outside(sample_id, rel)


def _check_links(root: Path, records: list[SampleRecord]) -> None:
    """A relative path can still leave the set through a symbolic link inside it; resolve only
    the paths that pass through a link (one ``lstat`` per file and folder, no file opened)."""
    real_root: str | None = None
    linked: dict[Path, bool] = {}
    for record in records:
        for rel in (record.image, record.labels):
            parts = PurePosixPath(rel).parts
            prefixes = [root.joinpath(*parts[:i]) for i in range(1, len(parts) + 1)]
            if not any(linked.setdefault(p, p.is_symlink()) for p in prefixes):
                continue
            real_root = real_root or os.path.realpath(root)
            target = os.path.realpath(root / rel)
            try:
                inside = os.path.commonpath([real_root, target]) == real_root
            except ValueError:  # Windows: another drive
                inside = False
            if not inside:
                raise _outside(record.id, rel)


def content_hash(records: list[SampleRecord]) -> str:
    """Dataset-level sha256 over the sorted per-sample hashes (identifies the exact data)."""
    return sha256_bytes("\n".join(sorted(r.sample_hash for r in records)).encode())


def _hash_mismatch(path: Path, expected: str, actual: str) -> DatasetError:
    return DatasetError(
        f"{path} does not match its sha256 in {MANIFEST} (expected {expected[:12]}..., found "
        f"{actual[:12]}...): the file or the manifest changed after export. Run `napari-raysam "
        "dataset validate` and export the training set again."
    )


def unreadable_tiff(path: Path, exc: BaseException) -> DatasetError:
    """A TIFF that cannot be decoded; names the error type only, as decoders' messages quote
    the file's first bytes."""
    return DatasetError(
        f"{path} cannot be read as TIFF ({type(exc).__name__}): the file is damaged or not an "
        "image written by napari-raysam; restore it or export the training set again."
    )


def missing_split_text(n: int, val_fraction: float, splits: list[str], planned: bool = False
                       ) -> str | None:
    """What a set of ``n`` samples with these ``splits`` cannot do, or None when it has both
    splits (``planned``: said of a set about to be written). ``val_fraction`` 0 makes a set
    that is all train, 1 a test set (all held out)."""
    if "val" not in splits:
        all_train = val_fraction <= 0
        what = f"{n} image(s)/plane(s)" + (", all for training (val fraction 0)," if all_train
                                            else "")
        head = (f"No validation split: the set will hold {what} and none is held out"
                if planned else f"This training set has {what} and no validation split")
        if all_train:
            return (f"{head}, so fine-tuning on it is not measured before/after. Evaluate on a "
                    "separate test set (`napari-raysam dataset create ... --val-fraction 1`, "
                    "then `napari-raysam evaluate TESTSET --model run:NAME`).")
        return (f"{head}, so fine-tuning cannot be measured before/after on held-out data. "
                "Export at least 2 annotated planes (or images) to get one.")
    if "train" not in splits:
        return (f"A test set: all {n} image(s)/plane(s) are held out (val split; val fraction "
                "1) and none is for training. Evaluate models on it (`napari-raysam evaluate "
                "SET --model ...`); train on another set.")
    return None


@dataclass
class TrainingSet:
    """An opened training set: manifest data plus readers. ``content_hash`` is recomputed from
    the sample records; ``manifest_content_hash`` is what manifest.json says."""

    path: Path
    schema_version: int
    created: str
    seed: int
    val_fraction: float
    samples: list[SampleRecord]
    manifest_content_hash: str
    content_hash: str = field(init=False)

    def __post_init__(self) -> None:
        self.content_hash = content_hash(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def n_objects(self) -> int:
        return sum(r.n_objects for r in self.samples)

    def split(self, name: str) -> list[SampleRecord]:
        """The records of split ``name`` ("train" or "val")."""
        if name not in SPLITS:
            raise DatasetError(f"Unknown split {name!r}; use one of {list(SPLITS)}.")
        return [r for r in self.samples if r.split == name]

    @property
    def has_val(self) -> bool:
        return bool(self.split("val"))

    def evaluation_split(self) -> str:
        """The split a model is scored on when this set is used as a test set: its held-out
        "val" split, or "train" (all of it) for a set of that one split (val fraction 0)."""
        return "val" if self.has_val or not self.split("train") else "train"

    @property
    def split_warning(self) -> str | None:
        """What a missing split means (no held-out evaluation, or nothing to train on: a test
        set), or None when the set has both splits."""
        return missing_split_text(len(self), self.val_fraction, [r.split for r in self.samples])

    def _read(self, rel: str, expected: str | None) -> np.ndarray:
        import tifffile

        path = self.path / rel
        if not path.is_file():
            raise DatasetError(
                f"{path} is missing: the training set is incomplete. Restore the file or export "
                "the training set again."
            )
        data = path.read_bytes()
        if expected is not None:
            actual = sha256_bytes(data)
            if actual != expected:
                raise _hash_mismatch(path, expected, actual)
        try:
            return tifffile.imread(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 - the decoder's message may quote the bytes
            raise unreadable_tiff(path, exc) from None

    def load(
        self, record: SampleRecord, verify: bool = False, normalise: bool = False,
        normalisation: dict | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Read one sample's (image, labels); see :meth:`iter_samples` for the options."""
        image = self._read(record.image, record.image_sha256 if verify else None)
        labels = self._read(record.labels, record.labels_sha256 if verify else None)
        if normalise:
            policy = ImagePolicy(channel_axis=record.channel_axis).using(normalisation)
            image = to_sam_rgb(image, policy)
        return image, labels

    def iter_samples(
        self, split: str | None = None, verify: bool = False, normalise: bool = True,
        normalisation: dict | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, SampleRecord]]:
        """Yield (image, labels, record) for ``split`` (None: all samples).

        normalise: image as SAM's (H, W, 3) uint8 via ``to_sam_rgb`` under the record's channel
        axis and ``normalisation`` (a model's; None: the default); otherwise the stored array.
        The set stores raw pixels, so the scaling belongs to the model, not to the set.
        verify: check both files' sha256 and raise :class:`DatasetError` naming the file on a
        mismatch.
        """
        records = self.samples if split is None else self.split(split)
        if verify and self.manifest_content_hash != self.content_hash:
            for record in records:  # name the damaged file when there is one
                self.load(record, verify=True)
            raise DatasetError(
                f"{self.path / MANIFEST}: content_hash does not match its samples (the manifest "
                "was edited by hand?). Export the training set again."
            )
        for record in records:
            image, labels = self.load(record, verify=verify, normalise=normalise,
                                      normalisation=normalisation)
            yield image, labels, record

    def summary(self) -> dict:
        """Plain numbers for display: samples/objects per split, shapes, hash, sources."""
        per_split = {
            name: {"samples": len(rs), "objects": sum(r.n_objects for r in rs)}
            for name in SPLITS
            for rs in [self.split(name)]
        }
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "created": self.created,
            "seed": self.seed,
            "samples": len(self),
            "objects": self.n_objects,
            "splits": per_split,
            "shapes": sorted({tuple(r.shape) for r in self.samples}),
            "dtypes": sorted({r.dtype for r in self.samples}),
            "sources": sorted({r.source for r in self.samples}),
            "content_hash": self.content_hash,
            "split_warning": self.split_warning,
        }


def is_training_set(path: str | Path) -> bool:
    """True for a folder whose manifest.json says it is a napari-raysam training set (cheap)."""
    manifest = Path(path) / MANIFEST
    try:
        if not manifest.is_file() or manifest.stat().st_size > 256 * 2**20:
            return False
        return json.loads(manifest.read_text()).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False


def read_manifest(path: Path) -> dict:
    """Load and schema-check manifest.json (no file access beyond it)."""
    manifest = path / MANIFEST
    if not path.exists():
        raise DatasetError(f"{path} does not exist; give the folder of a training set.")
    if not path.is_dir():
        raise DatasetError(f"{path} is not a folder; give the folder of a training set.")
    if not manifest.is_file():
        raise DatasetError(
            f"{path} has no {MANIFEST}, so it is not a napari-raysam training set; export one "
            "first (`napari-raysam dataset create` or the Export dock)."
        )
    try:
        data = json.loads(manifest.read_text())
    except UnicodeDecodeError:
        raise DatasetError(
            f"{manifest} is not UTF-8 text; restore it or export the training set again."
        ) from None
    except ValueError as exc:  # JSONDecodeError says where, never what
        raise DatasetError(
            f"{manifest} is not valid JSON ({exc}); restore it or export the training set again."
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise DatasetError(
            f"{manifest} is not a napari-raysam training-set manifest; choose a folder written by "
            "napari-raysam."
        )
    version = data.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise DatasetError(
            f"{manifest} has an invalid schema_version {version!r}; export the training set again."
        )
    if version > SCHEMA_VERSION:
        raise DatasetError(
            f"{path} uses training-set schema version {version}, but this napari-raysam reads up "
            f"to version {SCHEMA_VERSION}. Upgrade napari-raysam (pip install -U napari-raysam)."
        )
    missing = [k for k in ("created", "seed", "content_hash", "samples") if k not in data]
    if missing:
        raise DatasetError(f"{manifest} lacks {missing}; export the training set again.")
    return data


def open_dataset(path: str | Path) -> TrainingSet:
    """Open a training set folder; checks the manifest and its schema, not the files."""
    path = Path(path).absolute()
    data = read_manifest(path)
    if not isinstance(data["samples"], list):
        raise DatasetError(f"{path / MANIFEST}: 'samples' must be a list; export it again.")
    records = [SampleRecord.from_json(s) for s in data["samples"]]
    _check_links(path, records)
    return TrainingSet(
        path=path,
        schema_version=data["schema_version"],
        created=data["created"],
        seed=int(data["seed"]),
        val_fraction=float(data.get("val_fraction", 0.2)),
        samples=records,
        manifest_content_hash=data["content_hash"],
    )


def manifest_json(ts: TrainingSet) -> str:
    data = {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "created": ts.created,
        "updated": now_iso(),
        "content_hash": ts.content_hash,
        "seed": ts.seed,
        "val_fraction": ts.val_fraction,
        "n_samples": len(ts),
        "n_objects": ts.n_objects,
        "samples": [r.to_json() for r in ts.samples],
    }
    return json.dumps(data, indent=1)
