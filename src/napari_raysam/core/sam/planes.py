"""Which 2D plane of an image the Segment dock embeds, and how its status names it (Qt-free).

napari shows an N-D image through sliders; SAM sees one 2D (+channels) plane. These helpers
turn the viewer's slider positions into that plane, and say what an embedding was computed
for, so the dock can tell when it no longer fits what the user looks at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from napari_raysam.core.errors import RaysamError


@dataclass(frozen=True)
class Plane:
    """One plane of an image layer's data.

    index: numpy index into the layer's data (slices for the channel axis and Y, X).
    plane_index: the slider positions of the leading non-channel axes (``()`` for 2D).
    channel_axis: the channel axis within the plane (None: grayscale or RGB last).
    """

    index: tuple
    plane_index: tuple[int, ...]
    channel_axis: int | None


def select_plane(ndim: int, data_ndim: int, step, channel_axis: int | None) -> Plane:
    """The plane of a layer (``ndim`` slider + displayed axes, ``data_ndim`` array axes, an
    RGB axis counted only in the latter) at the viewer's ``step``; ``channel_axis`` is the
    layer's channel axis, which keeps all its channels."""
    if channel_axis is not None and not 0 <= channel_axis < ndim - 2:
        raise RaysamError(
            f"Channel axis {channel_axis} must come before the two image axes "
            "(e.g. C,Y,X or Z,C,Y,X)."
        )
    step = tuple(step)[-ndim:]
    lead_axes = [a for a in range(ndim - 2) if a != channel_axis]
    index: list = [slice(None)] * data_ndim
    for axis in lead_axes:
        index[axis] = int(step[axis])
    plane_axis = None
    if channel_axis is not None:
        plane_axis = channel_axis - sum(1 for a in lead_axes if a < channel_axis)
    return Plane(tuple(index), tuple(int(step[a]) for a in lead_axes), plane_axis)


def describe_plane(image_name: str, plane_index: tuple[int, ...]) -> str:
    """``'cells'`` for a 2D image, ``'stack, plane 2'``, ``'movie, plane (1, 2)'``."""
    if not plane_index:
        return image_name
    where = plane_index[0] if len(plane_index) == 1 else tuple(plane_index)
    return f"{image_name}, plane {where}"


class EmbeddedFor(NamedTuple):
    """What the dock's current embedding was computed for."""

    layer: object  # the image layer: napari may hand out a new proxy of it on every access
    plane_index: tuple[int, ...]
    fingerprint: str


def nothing_to_commit(has_embedding: bool, busy: bool) -> str:
    """Why a commit found no mask: the embedding is missing, or no prompts were given."""
    if has_embedding:
        return "Nothing to commit: add prompts (click cells or draw boxes) first."
    if busy:
        return "Nothing to commit: the embedding is still being computed; click when it is ready."
    return "Nothing to commit: compute the embedding first, then add prompts."


def model_text(loaded_spec: str | None, chosen: str, precision: str | None = None) -> str:
    """The Segment dock's model line: the model in use with the precision its embedding ran
    in (``'bf16 (AMX)'``), and a choice not loaded yet."""
    chosen = chosen.strip()
    if loaded_spec is None:
        return f"Model: {chosen or 'none'} (loads with the embedding)"
    shown = f"{loaded_spec} · {precision}" if precision else loaded_spec
    if chosen and chosen != loaded_spec:
        return f"Model: {shown} ({chosen} loads with the next embedding)"
    return f"Model: {shown}"


def image_changed_text(old: str, new: str | None) -> str:
    """Status after the Image choice moved away from the image the embedding belongs to."""
    if new is None:
        return f"Dropped the embedding of '{old}': no image layer is chosen."
    return (f"Image is now '{new}': dropped the embedding (and prompts) of '{old}'. "
            f"Compute the embedding of '{new}' to segment it.")


def ready_text(image_name: str, plane_index: tuple[int, ...]) -> str:
    return (f"Embedding ready ({describe_plane(image_name, plane_index)}). "
            "Click cells (positive/negative) or draw boxes.")
