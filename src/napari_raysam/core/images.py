"""The one normalisation and channel policy shared by inference and training.

SAM wants an (H, W, 3) uint8 RGB image. Microscopy gives 2D grayscale, RGB, multi-channel
(e.g. 4-channel Human Protein Atlas composites), uint8/uint16/float, sometimes with NaN/inf.
Everything that feeds SAM goes through :func:`to_sam_rgb`, so a model sees the same pixels
when it is trained and when it segments.

Two scalings, per channel, to uint8:

* ``minmax`` (the default): micro-sam's own (``micro_sam.util._to_image``, what its annotators
  and ``precompute_image_embeddings`` feed the encoder): the channel's minimum to 0, its maximum
  to 255, computed in float32 and truncated, so the pixels are identical to micro-sam's.
* ``percentile``: the ``lower``/``upper`` percentiles to 0/255, clipped; robust to a few hot
  pixels. Checkpoints written before the scaling was recorded were trained with it.

A model's scaling (its *normalisation*, :meth:`ImagePolicy.normalisation`) is stored in its
checkpoint and used wherever the model sees pixels (``core.sam.models``).

Large images are embedded in tiles. micro-sam scales each tile on its own
(``_compute_tiled_features_2d`` calls ``_to_image`` per tile), so under ``minmax`` a tile's
pixels come from the plane's own values (:class:`SamInput`), not from the whole-image uint8
input: the encoder sees exactly what micro-sam's sees. ``percentile`` (ours) scales the
whole plane once, and tiles are cut from that.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

import numpy as np

from napari_raysam.core.errors import RaysamError

#: Bumped whenever the pixels that :func:`to_sam_rgb` produces change for the same input
#: (2: the default scaling became micro-sam's min-max).
POLICY_VERSION = 2
MINMAX = "minmax"
PERCENTILE = "percentile"
SCALINGS = (MINMAX, PERCENTILE)
_NORMALISATION_KEYS = {"scaling", "lower", "upper", "policy_version"}


class ImageError(RaysamError, ValueError):
    """An image that cannot be turned into SAM input; the message says why and what to do."""


@dataclass(frozen=True)
class ImagePolicy:
    """How a 2D (+channels) plane becomes SAM's RGB input.

    channel_axis: axis of the plane holding channels (None: grayscale, or RGB/RGBA last axis).
    channels: which channels to use (at most 3, mapped to R, G, B); None picks the first 3.
    scaling: ``minmax`` (micro-sam's) or ``percentile``; lower/upper: the percentiles mapped
    to 0 and 255 per channel under ``percentile`` (unused by ``minmax``).
    """

    channel_axis: int | None = None
    channels: tuple[int, ...] | None = None
    scaling: str = MINMAX
    lower: float = 1.0
    upper: float = 99.8

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise ImageError(f"Unknown scaling {self.scaling!r}; use one of {', '.join(SCALINGS)}.")
        if not 0 <= self.lower < self.upper <= 100:
            raise ImageError(f"Percentiles lower={self.lower}, upper={self.upper} must satisfy "
                             "0 <= lower < upper <= 100.")

    def describe(self) -> dict:
        return {"policy_version": POLICY_VERSION, **asdict(self)}

    def normalisation(self) -> dict:
        """The scaling part as plain values: what a checkpoint records of its training pixels."""
        out = {"scaling": self.scaling, "policy_version": POLICY_VERSION}
        if self.scaling == PERCENTILE:
            out.update(lower=float(self.lower), upper=float(self.upper))
        return out

    def using(self, normalisation: dict | None) -> ImagePolicy:
        """This policy's channels with the scaling of ``normalisation`` (None: unchanged)."""
        if normalisation is None:
            return self
        if not isinstance(normalisation, dict) or not set(normalisation) <= _NORMALISATION_KEYS:
            raise ImageError(f"Not a normalisation: {str(normalisation)[:200]}; expected keys "
                             f"among {sorted(_NORMALISATION_KEYS)}.")
        values = {k: v for k, v in normalisation.items() if k != "policy_version"}
        try:
            return replace(self, **{"lower": 1.0, "upper": 99.8, **values})
        except TypeError:
            raise ImageError(f"Not a normalisation: {str(normalisation)[:200]}.") from None


#: What checkpoints written before the normalisation was recorded were trained with.
LEGACY = ImagePolicy(scaling=PERCENTILE)


def normalisation_tag(normalisation: dict) -> str:
    """A short stable name of a normalisation, for cache folders and keys."""
    text = json.dumps(normalisation, sort_keys=True)
    return f"{normalisation.get('scaling')}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


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


def _minmax_channel(channel: np.ndarray) -> np.ndarray:
    """micro-sam's arithmetic exactly (float32: minus the minimum, divided by the shifted
    maximum + 1e-7, times 255, truncated); NaN/inf first become the finite minimum."""
    values = channel.astype(np.float32)
    finite = np.isfinite(values)
    if not finite.all():
        if not finite.any():
            return np.zeros(values.shape, np.uint8)
        values = np.where(finite, values, values[finite].min())
    values -= values.min()
    values /= values.max() + np.float32(1e-7)
    return (values * np.float32(255)).astype(np.uint8)


def _percentile_channel(channel: np.ndarray, lower: float, upper: float) -> np.ndarray:
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


def check_plane(plane: np.ndarray, policy: ImagePolicy = ImagePolicy()) -> np.ndarray:
    """The (H, W, C<=3) channels ``policy`` selects from ``plane``; ImageError naming the
    problem when the plane cannot become SAM input (cheap: no scaling)."""
    plane = channels_last(plane, policy.channel_axis)
    if plane.shape[0] < 2 or plane.shape[1] < 2:
        raise ImageError(
            f"The image is {plane.shape[0]}x{plane.shape[1]} pixels; SAM needs at least 2x2."
        )
    if not (np.issubdtype(plane.dtype, np.number) or plane.dtype == bool):
        raise ImageError(f"Unsupported pixel type {plane.dtype}; use integer or float images.")
    return _select_channels(plane, policy.channels)


def to_sam_rgb(plane: np.ndarray, policy: ImagePolicy = ImagePolicy()) -> np.ndarray:
    """Turn one 2D (+channels) plane into SAM's (H, W, 3) uint8 input under ``policy``.

    Each channel scaled by ``policy.scaling``; NaN/inf become the channel's low value; a
    constant channel becomes 0; a grayscale plane is repeated to 3 channels; two channels fill
    R and G (micro-sam's channel rules).
    """
    return _scale_selected(check_plane(plane, policy), policy)


def _scale_selected(selected: np.ndarray, policy: ImagePolicy) -> np.ndarray:
    """(H, W, C<=3) chosen channels -> (H, W, 3) uint8 under ``policy.scaling``."""
    if policy.scaling == MINMAX:
        channels = [_minmax_channel(selected[..., i]) for i in range(selected.shape[-1])]
    else:
        channels = [_percentile_channel(selected[..., i], policy.lower, policy.upper)
                    for i in range(selected.shape[-1])]
    out = np.stack(channels, axis=-1)
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


@dataclass(frozen=True, eq=False)
class SamInput:
    """SAM's input for one plane: ``rgb``, the whole plane as (H, W, 3) uint8, and where the
    pixels of a tile come from.

    ``source`` (the plane's chosen channels, (H, W, C<=3), any dtype) is set when tiles are
    scaled on their own (``minmax``, micro-sam's per-tile ``_to_image``); without it a tile is
    cut from ``rgb``. Build one with :func:`to_sam_input`; a bare ``rgb`` array is
    ``SamInput(rgb)``.
    """

    rgb: np.ndarray
    source: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.rgb.shape

    def tile(self, rows: slice, cols: slice) -> np.ndarray:
        """The (h, w, 3) uint8 pixels the encoder sees for the tile ``[rows, cols]``."""
        if self.source is None:
            return np.ascontiguousarray(self.rgb[rows, cols])
        return _scale_selected(self.source[rows, cols], ImagePolicy(scaling=MINMAX))

    def tiles_hash(self) -> str:
        """Identifies every tile's pixels: the source's values and the per-tile rule when
        tiles are scaled on their own, else the whole-image input's."""
        if self.source is None:
            return pixel_hash(self.rgb)
        return f"{MINMAX}-per-tile:{pixel_hash(self.source)}"


def scaled_per_tile(sample, size: int) -> bool:
    """Whether a tile of ``sample`` (anything with ``rgb`` and ``source``, e.g. a SamInput) is
    scaled on its own: it has a ``source`` and spans more than one ``size`` tile (a single
    tile's own scaling is the whole image's)."""
    return getattr(sample, "source", None) is not None and max(sample.rgb.shape[:2]) > size


def as_sam_input(image: np.ndarray | SamInput) -> SamInput:
    """``image`` as a SamInput (a bare (H, W, 3) uint8 array: tiles cut from it)."""
    return image if isinstance(image, SamInput) else SamInput(np.asarray(image))


def to_sam_input(plane: np.ndarray, policy: ImagePolicy = ImagePolicy()) -> SamInput:
    """:func:`to_sam_rgb` of ``plane``, keeping its chosen channels when ``policy`` scales
    tiles on their own (``minmax``)."""
    selected = check_plane(plane, policy)
    rgb = _scale_selected(selected, policy)
    if policy.scaling != MINMAX:
        return SamInput(rgb)
    return SamInput(rgb, _canonical(selected))


def _canonical(selected: np.ndarray) -> np.ndarray:
    """The same values in native byte order, and as float32 when wider than 16 bits (min-max
    computes in float32 anyway): what a TIFF round trip keeps, so a key hashed from it on one
    computer is the key another computes from the uploaded file; and no float64 copies."""
    if selected.dtype.itemsize > 2:
        return selected.astype(np.float32, copy=False)
    return selected.astype(selected.dtype.newbyteorder("="), copy=False)
