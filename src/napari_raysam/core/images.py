"""The one normalisation and channel policy shared by inference and training.

SAM wants an (H, W, 3) uint8 RGB image. Microscopy gives 2D grayscale, RGB, multi-channel
(e.g. 4-channel Human Protein Atlas composites), uint8/uint16/float, sometimes with NaN/inf.
Everything that feeds SAM goes through :func:`to_sam_rgb`, so a model sees the same pixels
when it is trained and when it segments.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from napari_raysam.core.errors import RaysamError

#: Bumped whenever the pixels that :func:`to_sam_rgb` produces change for the same input.
POLICY_VERSION = 1


class ImageError(RaysamError, ValueError):
    """An image that cannot be turned into SAM input; the message says why and what to do."""


@dataclass(frozen=True)
class ImagePolicy:
    """How a 2D (+channels) plane becomes SAM's RGB input.

    channel_axis: axis of the plane holding channels (None: grayscale, or RGB/RGBA last axis).
    channels: which channels to use (at most 3, mapped to R, G, B); None picks the first 3.
    lower/upper: percentiles mapped to 0 and 255, per channel.
    """

    channel_axis: int | None = None
    channels: tuple[int, ...] | None = None
    lower: float = 1.0
    upper: float = 99.8

    def describe(self) -> dict:
        return {"policy_version": POLICY_VERSION, **asdict(self)}


def channels_last(plane: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """Return the plane as (H, W) or (H, W, C); validate its dimensionality."""
    plane = np.asarray(plane)
    if channel_axis is None:
        if plane.ndim == 3 and plane.shape[-1] in (3, 4):
            return plane  # RGB or RGBA, as napari shows it
        if plane.ndim != 2:
            raise ImageError(
                f"Expected a 2D image, got shape {plane.shape}. For a stack choose the plane "
                "axis; for channels say which axis holds them (channel_axis)."
            )
        return plane
    if plane.ndim != 3:
        raise ImageError(
            f"channel_axis={channel_axis} needs a 3D (channels + 2D) array, "
            f"got shape {plane.shape}."
        )
    return np.moveaxis(plane, channel_axis, -1)


def _select_channels(plane: np.ndarray, channels: tuple[int, ...] | None) -> np.ndarray:
    if plane.ndim == 2:
        return plane[..., None]
    n = plane.shape[-1]
    chosen = tuple(range(min(n, 3))) if channels is None else tuple(channels)
    if not 1 <= len(chosen) <= 3:
        raise ImageError(f"Choose 1 to 3 channels for SAM's RGB input, got {list(chosen)}.")
    bad = [c for c in chosen if not -n <= c < n]
    if bad:
        raise ImageError(f"Channel(s) {bad} do not exist: the image has {n} channels (0..{n - 1}).")
    return plane[..., list(chosen)]


def _scale_channel(channel: np.ndarray, lower: float, upper: float) -> np.ndarray:
    values = channel.astype(np.float32, copy=False)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, np.uint8)
    lo, hi = np.percentile(values[finite], [lower, upper])
    if hi <= lo:  # constant (or almost) channel: nothing to stretch
        lo, hi = float(values[finite].min()), float(values[finite].max())
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    values = np.where(finite, values, lo)
    scaled = (values - lo) * (255.0 / (hi - lo))
    return np.clip(scaled, 0, 255).round().astype(np.uint8)


def to_sam_rgb(plane: np.ndarray, policy: ImagePolicy = ImagePolicy()) -> np.ndarray:
    """Turn one 2D (+channels) plane into SAM's (H, W, 3) uint8 input under ``policy``.

    Percentile scaling per channel; NaN/inf become the channel's low value; a constant channel
    becomes 0; a grayscale plane is repeated to 3 channels; two channels fill R and G.
    """
    plane = channels_last(plane, policy.channel_axis)
    if plane.shape[0] < 2 or plane.shape[1] < 2:
        raise ImageError(
            f"The image is {plane.shape[0]}x{plane.shape[1]} pixels; SAM needs at least 2x2."
        )
    if not (np.issubdtype(plane.dtype, np.number) or plane.dtype == bool):
        raise ImageError(f"Unsupported pixel type {plane.dtype}; use integer or float images.")
    selected = _select_channels(plane, policy.channels)
    out = np.stack(
        [_scale_channel(selected[..., i], policy.lower, policy.upper)
         for i in range(selected.shape[-1])],
        axis=-1,
    )
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    elif out.shape[-1] == 2:
        out = np.concatenate([out, np.zeros_like(out[..., :1])], axis=-1)
    return np.ascontiguousarray(out)


def pixel_hash(array: np.ndarray) -> str:
    """sha256 of an array's shape, dtype and bytes."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.shape}|{array.dtype.str}|".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()
