"""What an input file holds and whether it can be segmented: each odd input gets a reason.

Accepted: a 2D image (Y, X), a 2D image with up to 4 channels last (Y, X, C), or a stack of 2D
planes (Z, Y, X), segmented plane by plane. Anything else is skipped with the reason named.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

IMAGE_SUFFIXES = (".tif", ".tiff")
MAX_CHANNELS = 4


@dataclass(frozen=True)
class Planes:
    """The planes of one input: ``planes[i]`` is (Y, X) or (Y, X, C); ``stack`` is True for Z."""

    planes: list[np.ndarray]
    stack: bool
    channel_axis: int | None


class InputSkipped(Exception):
    """An input that cannot be segmented; ``str(exc)`` is the reason shown to the user."""


def is_candidate(name: str) -> bool:
    """Whether a file name looks like an image this job reads (others are listed as skipped)."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def read_planes(name: str, data: bytes) -> Planes:
    """Decode a TIFF and split it into planes; :class:`InputSkipped` names what is wrong."""
    import tifffile

    if not is_candidate(name):
        raise InputSkipped("not a TIFF file (.tif/.tiff)")
    if not data:
        raise InputSkipped("empty file")
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            if not tif.series or not tif.pages:
                raise InputSkipped("unreadable TIFF (no image data)")
            array = np.asarray(tif.series[0].asarray())
    except InputSkipped:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds for damaged files
        raise InputSkipped(f"unreadable TIFF ({type(exc).__name__})") from None
    return split_planes(array)


def split_planes(array: np.ndarray) -> Planes:
    """(Y, X), (Y, X, C<=4) or (Z, Y, X) into planes; anything else is skipped."""
    if array.size == 0 or min(array.shape, default=0) == 0:
        raise InputSkipped(f"zero-size image {tuple(array.shape)}")
    if array.dtype.kind not in "uif" and array.dtype != bool:
        raise InputSkipped(f"unsupported pixel type {array.dtype}")
    shape = tuple(array.shape)
    if array.ndim == 2:
        return Planes([array], False, None)
    if array.ndim == 3 and shape[-1] <= MAX_CHANNELS and min(shape[:2]) > MAX_CHANNELS:
        return Planes([array], False, -1)
    if array.ndim == 3:
        return Planes(list(array), True, None)
    raise InputSkipped(f"{array.ndim}D image {shape}: expected (Y, X), (Y, X, C<=4) or (Z, Y, X);"
                       " split it into 2D images or stacks first")
