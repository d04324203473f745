"""Import a training set from two folders of TIFF files (images and instance labels)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatch
from pathlib import Path

import numpy as np

from napari_raysam.core.dataset.format import DatasetError, TrainingSet
from napari_raysam.core.dataset.inputs import Mode, SampleInput, plane_axes, planes_to_inputs
from napari_raysam.core.dataset.write import write_dataset

TIFF_SUFFIXES = (".tif", ".tiff")
#: Label file name = image stem + one of these (cellpose writes `_masks`, `_cp_masks`, `_seg`).
LABEL_SUFFIXES = ("", "_masks", "_mask", "_cp_masks", "_seg", "_labels", "_label")
_LIST_MAX = 20


def _tiffs(folder: Path, pattern: str | None) -> list[Path]:
    return [
        p for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith(".")
        and (pattern is None or fnmatch(p.name, pattern))
    ]


def _is_label_name(stem: str) -> bool:
    return any(s and stem.endswith(s) for s in LABEL_SUFFIXES)


def _listing(title: str, items: list) -> str:
    shown = [f"  {i}" for i in items[:_LIST_MAX]]
    if len(items) > _LIST_MAX:
        shown.append(f"  ... and {len(items) - _LIST_MAX} more")
    return "\n".join([title, *shown])


def pair_files(
    images_dir: str | Path, labels_dir: str | Path, pattern: str | None = None
) -> list[tuple[Path, Path]]:
    """Pair image TIFFs with label TIFFs by file name.

    A label file has the image's name, or its stem plus a cellpose-style suffix
    (``_masks``, ``_cp_masks``, ``_seg``, ...). Both may live in one folder (then files with such
    a suffix are the labels). ``pattern`` (a glob on the file name) selects images. Unpaired or
    ambiguous files raise DatasetError listing them.
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for what, folder in (("images", images_dir), ("labels", labels_dir)):
        if not folder.is_dir():
            raise DatasetError(
                f"The {what} folder {folder} does not exist; give an existing folder."
            )
    same = images_dir.resolve() == labels_dir.resolve()
    images = _tiffs(images_dir, pattern)
    label_files = _tiffs(labels_dir, None)
    if same:
        images = [p for p in images if not _is_label_name(p.stem)]
        label_files = [p for p in label_files if _is_label_name(p.stem)]
    if not images:
        which = f" matching {pattern!r}" if pattern else ""
        raise DatasetError(
            f"No TIFF images{which} in {images_dir}; check the folder (and --pattern)."
        )
    by_stem: dict[str, list[Path]] = {}
    for p in label_files:
        by_stem.setdefault(p.stem, []).append(p)
    pairs, lonely, ambiguous, used = [], [], [], set()
    for image in images:
        found = [p for s in LABEL_SUFFIXES for p in by_stem.get(image.stem + s, []) if p != image]
        if not found:
            lonely.append(image.name)
        elif len(found) > 1:
            ambiguous.append(f"{image.name}: {', '.join(p.name for p in found)}")
        else:
            pairs.append((image, found[0]))
            used.add(found[0])
    orphans = [p.name for p in label_files if p not in used] if pattern is None else []
    if lonely or ambiguous or orphans:
        parts = ["Cannot pair every image with its labels:"]
        if lonely:
            parts.append(_listing(f"images without labels (in {labels_dir}):", lonely))
        if ambiguous:
            parts.append(_listing("images with more than one labels file:", ambiguous))
        if orphans:
            parts.append(_listing(f"labels without an image (in {images_dir}):", orphans))
        parts.append(
            "Name each labels file like its image (same name, or with a _masks/_seg suffix), "
            "remove the extra files, or select images with --pattern."
        )
        raise DatasetError("\n".join(parts))
    return pairs


def _channel_axis(image_shape: tuple, labels_shape: tuple, source: str,
                  exclude: tuple[int, ...] = ()) -> int | None:
    """Find the image axis that holds channels: the one whose removal gives the labels shape
    (``exclude``: axes known not to hold channels, e.g. the stack axes)."""
    if len(image_shape) == 3 and image_shape[-1] == 3 and image_shape[:2] == labels_shape:
        return None  # RGB
    axes = [i for i in range(len(image_shape)) if i not in exclude
            and image_shape[:i] + image_shape[i + 1:] == labels_shape]
    if len(axes) > 1:
        small = [i for i in (0, len(image_shape) - 1) if i in axes and image_shape[i] <= 16]
        axes = small if len(small) == 1 else axes
    if len(axes) != 1:
        raise DatasetError(
            f"{source}: cannot tell which axis of the image {image_shape} holds channels "
            f"(labels are {labels_shape}); pass channel_axis (--channel-axis)."
        )
    return axes[0]


def _inferred_channel_axis(image_shape: tuple, labels_shape: tuple, source: str,
                           channel_axis: int | None, exclude: tuple[int, ...] = ()) -> int | None:
    """``channel_axis`` if given (normalised), else the image axis the labels lack, or the one
    where they keep length 1 (napari's objects layer of a T, Z, C, Y, X image); else None."""
    ndim = len(image_shape)
    if channel_axis is not None:
        return channel_axis % ndim if -ndim <= channel_axis < ndim else channel_axis
    if ndim == len(labels_shape) + 1:
        return _channel_axis(image_shape, labels_shape, source, exclude)
    kept = [i for i in range(ndim) if i not in exclude and labels_shape[i] == 1 != image_shape[i]]
    return kept[0] if ndim == len(labels_shape) and len(kept) == 1 else None


def _stack_axes(stack_axis: int | Sequence[int], ndim: int, source: str) -> tuple[int, ...]:
    """The stack axes as non-negative ints; a wrong axis raises DatasetError naming the file."""
    axes = (stack_axis,) if isinstance(stack_axis, int | np.integer) else tuple(stack_axis)
    bad = [a for a in axes if not -ndim <= int(a) < ndim]
    if bad:
        raise DatasetError(
            f"{source}: stack axis {bad[0]} does not exist for a {ndim}D image; use 0..{ndim - 1} "
            f"(e.g. --stack-axis 0 1 for a T, Z, C, Y, X stack)."
        )
    return tuple(int(a) % ndim for a in axes)


def arrays_to_inputs(
    image: np.ndarray, labels: np.ndarray, source: str, channel_axis: int | None = None,
    stack_axis: int | Sequence[int] | None = None,
) -> tuple[list[SampleInput], list]:
    """Inputs from one image file's arrays: 2D, 2D + channels, or a stack of planes.

    ``stack_axis``: the image axis (or axes, e.g. ``(0, 1)`` for T, Z, C, Y, X) holding the
    planes; None infers it: every axis before the last two that is not the channel axis.
    """
    image_shape, labels_shape = tuple(image.shape), tuple(labels.shape)
    if stack_axis is not None:
        sa = _stack_axes(stack_axis, image.ndim, source)
        ca = _inferred_channel_axis(image_shape, labels_shape, source, channel_axis, sa)
        return planes_to_inputs(image, labels, source, sa if len(sa) != 1 else sa[0], ca)
    if labels.ndim == 2:
        if image.ndim == 2:
            return planes_to_inputs(image, labels, source, None)
        ca = channel_axis if channel_axis is not None else \
            _channel_axis(image_shape, labels_shape, source)
        return planes_to_inputs(image, labels, source, None, ca)
    if labels.ndim == 3 and image.ndim == 3 and labels.shape[-1] not in (3, 4):
        return planes_to_inputs(image, labels, source, 0, channel_axis)
    if labels.ndim >= 3 and (image.ndim == labels.ndim + 1 or image.ndim == labels.ndim >= 4):
        ca = _inferred_channel_axis(image_shape, labels_shape, source, channel_axis)
        return planes_to_inputs(image, labels, source, plane_axes(image.ndim, ca), ca)
    # let the shared checks explain (RGB labels, wrong dimensionality, ...)
    return planes_to_inputs(image, labels, source, None, channel_axis)


def inputs_from_folders(
    images_dir: str | Path,
    labels_dir: str | Path,
    pattern: str | None = None,
    channel_axis: int | None = None,
    stack_axis: int | Sequence[int] | None = None,
) -> tuple[list[SampleInput], list[str]]:
    """Read paired TIFFs into inputs; returns (inputs, notes on skipped planes without objects)."""
    import tifffile

    inputs, skipped = [], []
    for image_path, labels_path in pair_files(images_dir, labels_dir, pattern):
        try:
            image, labels = tifffile.imread(image_path), tifffile.imread(labels_path)
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the user's file
            raise DatasetError(
                f"Cannot read {image_path} / {labels_path} as TIFF ({exc}); check the files."
            ) from exc
        new, empty = arrays_to_inputs(image, labels, str(image_path), channel_axis,
                                      stack_axis)
        inputs += new
        if empty:
            skipped.append(f"{image_path.name}: planes {empty} have no objects")
    return inputs, skipped


def create_from_folders(
    images_dir: str | Path,
    labels_dir: str | Path,
    dest: str | Path,
    pattern: str | None = None,
    mode: Mode = "new",
    seed: int = 0,
    val_fraction: float = 0.2,
    allow_duplicates: bool = False,
    channel_axis: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    stack_axis: int | Sequence[int] | None = None,
) -> TrainingSet:
    """Pair TIFFs in two folders (see :func:`pair_files`) and write them as a training set."""
    inputs, _ = inputs_from_folders(images_dir, labels_dir, pattern, channel_axis, stack_axis)
    return write_dataset(dest, inputs, mode=mode, seed=seed, val_fraction=val_fraction,
                         allow_duplicates=allow_duplicates, progress=progress)
