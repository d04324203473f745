"""Export inputs: per-plane samples from stacks, and the checks every sample must pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from napari_raysam.core.dataset.format import DatasetError
from napari_raysam.core.images import pixel_hash

Mode = Literal["new", "append"]
MAX_LABEL_ID = 2**32 - 1
RGB_NAMES = ["red", "green", "blue", "alpha"]


@dataclass
class SampleInput:
    """One 2D (+channels) image and its instance labels (0 = background), ready to export."""

    image: np.ndarray
    labels: np.ndarray
    source: str
    plane: int | None = None
    channel_axis: int | None = None
    channel_names: list[str] | None = None
    plane_index: tuple[int, ...] | None = None  # per-axis index when the stack has several axes

    def describe(self) -> str:
        if self.plane is None:
            return self.source
        return f"{self.source} (plane {self.plane_index or self.plane})"


@dataclass
class PreparedSample:
    """A validated :class:`SampleInput`: arrays in their stored dtypes plus derived facts."""

    input: SampleInput
    image: np.ndarray
    labels: np.ndarray  # uint16 or uint32
    channel_axis: int | None  # non-negative, None for grayscale/RGB(A)
    channel_names: list[str]
    pixel_hash: str
    n_objects: int



def _axis(axis: int, ndim: int, what: str) -> int:
    if not -ndim <= axis < ndim:
        raise DatasetError(f"{what}={axis} does not exist for a {ndim}D array; use 0..{ndim - 1}.")
    return axis % ndim


def _labels_without_channel_axis(labels, image_shape: tuple, channel_axis: int | None):
    """Drop a length-1 channel axis that labels kept in the image's channel position (napari's
    objects layer of a Z,C,Y,X image keeps one so it aligns with the image's axes)."""
    ndim = len(image_shape)
    if channel_axis is None or not -ndim <= channel_axis < ndim or len(labels.shape) != ndim:
        return labels
    ca = channel_axis % ndim
    if labels.shape[ca] != 1:
        return labels
    return labels[(slice(None),) * ca + (0,)]


def _plane_shape_error(stack_axis, shape: tuple, ca: int | None, n_left: int) -> DatasetError:
    problem = (f"stack_axis={stack_axis} needs a stack of 2D planes (3D, or 4D with channels, "
               f"one more axis per extra stack axis), got shape {shape}")
    if ca is not None:
        problem += f" with channels on axis {ca}"
    problem += f", which leaves {n_left}D planes"
    if n_left > 2:
        if ca is None:
            fix = ("name every axis before Y, X as a stack axis (e.g. stack_axis=(0, 1) for "
                   "T, Z, Y, X), and say which axis holds channels (channel_axis) if there are any")
        else:
            fix = ("name every axis before Y, X except the channel axis as a stack axis (e.g. "
                   "stack_axis=(0, 1) for T, Z, C, Y, X)")
    else:
        fix = "leave the two image axes (Y, X) out of stack_axis"
    return DatasetError(f"{problem}; {fix}.")


def plane_axes(ndim: int, channel_axis: int | None, rgb: bool = False
               ) -> int | tuple[int, ...] | None:
    """The stack axes of an image with ``ndim`` axes: every axis but the channel axis (the last
    one for RGB) and Y, X. An int for one axis, a tuple for several, None for a single plane."""
    drop = ndim - 1 if rgb else channel_axis
    axes = [a for a in range(ndim) if a != drop][:-2]
    return None if not axes else axes[0] if len(axes) == 1 else tuple(axes)


def planes_to_inputs(
    image: np.ndarray,
    labels: np.ndarray,
    source: str,
    stack_axis: int | Sequence[int] | None,
    channel_axis: int | None = None,
    planes: Literal["all"] | int | Sequence[int] | Sequence[Sequence[int]] = "all",
    channel_names: list[str] | None = None,
) -> tuple[list[SampleInput], list]:
    """Split an image stack and its labels into per-plane inputs.

    stack_axis: axis of ``image`` holding the planes, or several axes (e.g. ``(0, 1)`` for the
    T, Z of a T,Z,C,Y,X stack: every (T, Z) plane becomes one input); None: ``image`` is one 2D
    (+channels) plane. channel_axis: axis of ``image`` holding channels (None: grayscale or
    RGB(A) last). Labels have the image's axes minus the channel axis (a length-1 channel axis
    in its place is accepted too). ``planes``: "all", or with one stack axis an index or a list
    of them, with several a tuple of per-axis indices or a list of such tuples.

    A plane's number (``SampleInput.plane``, the manifest's ``plane``) is its index along the
    stack axis; with several stack axes it is the row-major flat index (``t * Z + z``) and
    ``plane_index`` holds the tuple. Planes whose labels hold no object are skipped and returned
    as the second element (indices, or tuples with several stack axes).
    """
    shape = tuple(image.shape)
    ndim = len(shape)
    labels = _labels_without_channel_axis(labels, shape, channel_axis)
    if stack_axis is None:
        return [SampleInput(np.asarray(image), np.asarray(labels), source, None, channel_axis,
                            channel_names)], []
    single = isinstance(stack_axis, int | np.integer)
    axes = (stack_axis,) if single else tuple(stack_axis)
    if not axes:
        raise DatasetError("stack_axis=() names no axis; give None for a single 2D plane.")
    sa = tuple(_axis(int(a), ndim, "stack_axis") for a in axes)
    if len(set(sa)) != len(sa):
        raise DatasetError(f"stack_axis={stack_axis} names an axis twice; name each once.")
    ca = None if channel_axis is None else _axis(channel_axis, ndim, "channel_axis")
    if ca in sa:
        raise DatasetError("stack_axis and channel_axis are the same axis; give different axes.")
    rgb = ca is None and ndim == len(sa) + 3 and shape[-1] in (3, 4)
    drop = ndim - 1 if rgb else ca
    n_left = sum(1 for i in range(ndim) if i not in sa and i != drop)
    if n_left != 2:
        raise _plane_shape_error(stack_axis, shape, ca, n_left)
    spatial = tuple(s for i, s in enumerate(shape) if i != drop)
    if tuple(labels.shape) != spatial:
        raise DatasetError(
            f"{source}: labels shape {tuple(labels.shape)} does not match the image's planes: "
            f"expected {spatial} (image shape {shape} without its channel axis); pair the image "
            "with the labels drawn on it."
        )
    lsa = tuple(a - (1 if drop is not None and drop < a else 0) for a in sa)
    pca = None if ca is None else ca - sum(1 for a in sa if a < ca)
    counts = tuple(shape[a] for a in sa)
    indices = _plane_indices(planes, counts, single)
    inputs, skipped = [], []
    for idx in indices:
        lab_index, img_index = [slice(None)] * len(spatial), [slice(None)] * ndim
        for la, a, k in zip(lsa, sa, idx, strict=True):
            lab_index[la], img_index[a] = k, k
        lab = np.asarray(labels[tuple(lab_index)])
        if not lab.any():
            skipped.append(idx[0] if single else idx)
            continue
        img = np.asarray(image[tuple(img_index)])
        plane = idx[0] if single else int(np.ravel_multi_index(idx, counts))
        inputs.append(SampleInput(img, lab, source, plane, pca, channel_names,
                                  None if single else idx))
    return inputs, skipped


def _plane_indices(planes, counts: tuple[int, ...], single: bool) -> list[tuple[int, ...]]:
    """The per-axis index tuples that ``planes`` selects (see :func:`planes_to_inputs`)."""
    if isinstance(planes, str):
        if planes != "all":
            raise DatasetError(f"planes={planes!r}: use 'all' or plane indices.")
        return [tuple(int(k) for k in idx) for idx in np.ndindex(*counts)]
    if single:
        wanted = [planes] if isinstance(planes, int | np.integer) else list(planes)
        return [(_axis(int(k), counts[0], "plane"),) for k in wanted]
    scalar = isinstance(planes, int | np.integer)
    one = scalar or (len(planes) > 0 and all(isinstance(k, int | np.integer) for k in planes))
    wanted = [planes] if one else list(planes)
    out = []
    for idx in wanted:
        if isinstance(idx, int | np.integer) or len(idx) != len(counts):
            raise DatasetError(f"plane {idx!r}: give one index per stack axis ({len(counts)}), "
                               f"e.g. {tuple(0 for _ in counts)}.")
        out.append(tuple(_axis(int(k), n, "plane") for k, n in zip(idx, counts, strict=True)))
    return out


def prepare_sample(inp: SampleInput) -> PreparedSample:  # noqa: C901 - a flat list of checks
    """Validate one input; raise DatasetError naming the problem and the fix."""
    where = inp.describe()
    image, labels = np.asarray(inp.image), np.asarray(inp.labels)

    def fail(problem: str, fix: str) -> DatasetError:
        return DatasetError(f"{where}: {problem}; {fix}")

    if image.size == 0:
        raise fail(f"the image is empty (shape {image.shape})", "export an image with pixels")
    numeric = image.dtype == bool or np.issubdtype(image.dtype, np.number)
    if not numeric or np.iscomplexobj(image):
        raise fail(f"unsupported pixel type {image.dtype}", "use an integer or float image")
    if labels.dtype == bool:
        raise fail("labels are a boolean mask, not instance labels",
                   "give each object its own integer id (e.g. scipy.ndimage.label(mask)[0])")
    if not np.issubdtype(labels.dtype, np.integer):
        raise fail(f"labels have the non-integer type {labels.dtype}",
                   "use an instance label image with integer ids (a napari Labels layer)")
    if labels.ndim == 3 and labels.shape[-1] in (3, 4):
        raise fail(f"labels look like an RGB image (shape {labels.shape})",
                   "convert them to an instance label image with one integer id per object")
    if labels.ndim != 2:
        raise fail(f"labels are {labels.ndim}D (shape {labels.shape}) where 2D planes are "
                   "expected", "say which axis holds the planes (stack_axis) to split the stack")
    ca = inp.channel_axis
    if ca is not None:
        if image.ndim != 3:
            raise fail(f"channel_axis={ca} needs a channels + 2D image, got shape {image.shape}",
                       "drop channel_axis for a 2D image or split the stack into planes first")
        ca = _axis(ca, 3, "channel_axis")
        spatial = tuple(s for i, s in enumerate(image.shape) if i != ca)
    elif image.ndim == 2:
        spatial = image.shape
    elif image.ndim == 3 and image.shape[-1] in (3, 4):
        spatial = image.shape[:2]  # RGB(A), channels last
    else:
        raise fail(f"the image is {image.ndim}D (shape {image.shape}) where a 2D plane is expected",
                   "say which axis holds the planes (stack_axis) or the channels (channel_axis)")
    if spatial != labels.shape:
        raise fail(f"image shape {image.shape} and labels shape {labels.shape} differ",
                   "pair each image with the labels drawn on it (same height and width)")
    if min(spatial) < 2:
        raise fail(f"the image is {spatial[0]}x{spatial[1]} pixels", "export at least 2x2 pixels")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise fail("the image contains NaN or infinite values, which poison training losses",
                   "replace them first (e.g. numpy.nan_to_num) or crop them away")
    if image.min() == image.max():
        raise fail("the image is constant (every pixel is the same), so there is nothing to learn",
                   "export an image with content")
    if np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise fail("labels contain negative values",
                   "use 0 for background and positive integer ids for objects")
    top = int(labels.max())
    if top > MAX_LABEL_ID:
        raise fail(f"label id {top} does not fit in uint32 (max {MAX_LABEL_ID})",
                   "relabel the objects consecutively (skimage.segmentation.relabel_sequential)")
    n_objects = int(np.count_nonzero(np.unique(labels)))
    if n_objects == 0:
        raise fail("the labels hold no objects", "annotate at least one object or leave it out")
    n_channels = 1 if image.ndim == 2 else image.shape[-1] if ca is None else image.shape[ca]
    names = list(inp.channel_names) if inp.channel_names else (
        [] if image.ndim == 2 else RGB_NAMES[:n_channels] if ca is None
        else [f"channel {i}" for i in range(n_channels)]
    )
    if names and len(names) != n_channels:
        raise fail(f"{len(names)} channel names for {n_channels} channel(s)",
                   "give one name per channel")
    if image.dtype == bool:
        image = image.astype(np.uint8)
    stored = labels.astype(np.uint16 if top < 2**16 else np.uint32, copy=False)
    return PreparedSample(inp, np.ascontiguousarray(image), np.ascontiguousarray(stored), ca,
                          names, pixel_hash(image), n_objects)
