"""Export inputs: per-plane samples from stacks, and the checks every sample must pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .dataset_format import DatasetError
from .images import pixel_hash

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

    def describe(self) -> str:
        return self.source if self.plane is None else f"{self.source} (plane {self.plane})"


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


def planes_to_inputs(
    image: np.ndarray,
    labels: np.ndarray,
    source: str,
    stack_axis: int | None,
    channel_axis: int | None = None,
    planes: Literal["all"] | int | Sequence[int] = "all",
    channel_names: list[str] | None = None,
) -> tuple[list[SampleInput], list[int]]:
    """Split an image stack and its labels into per-plane inputs.

    stack_axis: axis of ``image`` holding the planes (None: ``image`` is one 2D (+channels)
    plane). channel_axis: axis of ``image`` holding channels (None: grayscale or RGB(A) last).
    Labels have the image's axes minus the channel axis. Planes whose labels hold no object are
    skipped and returned as the second element.
    """
    if stack_axis is None:
        return [SampleInput(np.asarray(image), np.asarray(labels), source, None, channel_axis,
                            channel_names)], []
    shape = tuple(image.shape)
    ndim = len(shape)
    sa = _axis(stack_axis, ndim, "stack_axis")
    ca = None if channel_axis is None else _axis(channel_axis, ndim, "channel_axis")
    if ca == sa:
        raise DatasetError("stack_axis and channel_axis are the same axis; give different axes.")
    rgb = ca is None and ndim == 4 and shape[-1] in (3, 4)
    if ndim != (3 if ca is None and not rgb else 4):
        raise DatasetError(
            f"stack_axis={stack_axis} needs a stack of 2D planes (3D, or 4D with channels), got "
            f"shape {shape}; say which axis holds channels (channel_axis) if there are any."
        )
    drop = ndim - 1 if rgb else ca
    spatial = tuple(s for i, s in enumerate(shape) if i != drop)
    if tuple(labels.shape) != spatial:
        raise DatasetError(
            f"{source}: labels shape {tuple(labels.shape)} does not match the image's "
            f"{spatial} (shape {shape} without its channel axis); pair the image with the labels "
            "drawn on it."
        )
    lsa = sa - (1 if drop is not None and drop < sa else 0)
    pca = None if ca is None else ca - (1 if sa < ca else 0)
    n = shape[sa]
    if isinstance(planes, str):
        if planes != "all":
            raise DatasetError(f"planes={planes!r}: use 'all' or plane indices.")
        indices = list(range(n))
    else:
        wanted = [planes] if isinstance(planes, int | np.integer) else list(planes)
        indices = [_axis(int(k), n, "plane") for k in wanted]
    inputs, skipped = [], []
    for k in indices:
        lab = np.asarray(labels[(slice(None),) * lsa + (k,)])
        if not lab.any():
            skipped.append(k)
            continue
        img = np.asarray(image[(slice(None),) * sa + (k,)])
        inputs.append(SampleInput(img, lab, source, k, pca, channel_names))
    return inputs, skipped


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
