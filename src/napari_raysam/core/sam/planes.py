"""Which 2D plane of an image the Segment dock embeds, where its objects go, and how its
status names them (Qt-free).

napari shows an N-D image through sliders; SAM sees one 2D (+channels) plane. These helpers
turn the viewer's slider positions into that plane, say what an embedding was computed for (so
the dock can tell when it no longer fits what the user looks at), map a plane to the axes of
the objects layer, and keep the next free object id without rescanning the volume.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

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


def all_planes(ndim: int, data_shape: tuple[int, ...], channel_axis: int | None
               ) -> Iterator[Plane]:
    """Every plane of a layer (see :func:`select_plane`), in slider order."""
    lead = [a for a in range(ndim - 2) if a != channel_axis]
    for values in itertools.product(*(range(int(data_shape[a])) for a in lead)):
        step = [0] * ndim
        for axis, value in zip(lead, values, strict=True):
            step[axis] = value
        yield select_plane(ndim, len(data_shape), step, channel_axis)


def sam_planes(data, ndim: int, channel_axis: int | None, channels, model) -> Iterator:
    """The SAM input (``images.SamInput``, scaled the way ``model`` learned) of every plane of
    a layer's ``data``, in slider order; each plane is checked first (RaysamError)."""
    from napari_raysam.core.images import ImagePolicy, check_plane, to_sam_input

    for plane in all_planes(ndim, data.shape, channel_axis):
        policy = ImagePolicy(channel_axis=plane.channel_axis, channels=channels)
        array = np.asarray(data[plane.index])
        check_plane(array, policy)
        yield to_sam_input(array, model.image_policy(policy))


def check_view(ndisplay: int, order) -> None:
    """Raise unless the viewer shows a Y, X plane: 2D, the last two axes displayed in order."""
    if ndisplay != 2:
        raise RaysamError("Segmenting works in the 2D view: switch the viewer to 2D.")
    order = tuple(order)
    if order[-2:] != (len(order) - 2, len(order) - 1):  # transposed: not a Y, X plane
        raise RaysamError("The viewer shows other axes than the image's last two (Y, X); "
                          "reset the axis order (Transpose/Roll buttons) to segment.")


def objects_layout(shape: tuple[int, ...], rgb: bool, channel_axis: int | None,
                   scale, translate) -> tuple[tuple[int, ...], list[float], list[float]]:
    """Shape, scale and translate of the objects (labels) of an image of ``shape``.

    The objects have the image's axes without channels. napari aligns layers by their trailing
    axes, so a channel axis that is not first (Z,C,Y,X; T,Z,C,Y,X) cannot simply be dropped:
    the labels would line up with the wrong sliders. It is kept with length 1 instead, scaled
    to span all the image's channels (centred on them), so the objects show whichever channel
    the viewer is on. The Export dock accepts labels with that length-1 axis.
    """
    shape = list(shape[:-1] if rgb else shape)
    scale, translate = [float(s) for s in scale], [float(t) for t in translate]
    axis = None if rgb else channel_axis
    if axis is None:
        return tuple(shape), scale, translate
    axis = int(axis) % len(shape)
    if axis == 0:  # C,Y,X...: the remaining axes are trailing, napari aligns them right
        return tuple(shape[1:]), scale[1:], translate[1:]
    n = shape[axis]
    shape[axis] = 1
    translate[axis] += (n - 1) * scale[axis] / 2  # data index 0 maps to the channels' centre
    scale[axis] *= n  # ... and every channel rounds to it
    return tuple(shape), scale, translate


def objects_index(plane_index: tuple[int, ...], image_ndim: int, channel_axis: int | None,
                  objects_ndim: int) -> tuple[int, ...]:
    """The index of the objects' axes before Y, X for the image plane ``plane_index`` (which
    skips the channel axis): 0 on a length-1 channel axis the objects keep (see
    :func:`objects_layout`). ``channel_axis``: the image's (None for RGB or grayscale)."""
    lead = list(plane_index)
    if channel_axis is not None and objects_ndim == len(lead) + 3:
        lead.insert(int(channel_axis) % image_ndim, 0)
    return tuple(lead)


class ObjectIds:
    """The largest object id of a labels array, kept without scanning the array per commit.

    :meth:`next_id` scans an array once (the first time, or when it is another array: the
    layer's data was replaced) and afterwards only counts what :meth:`saw` was told was
    written (commits, brush strokes). Ids are unique, not necessarily contiguous: an undone
    commit's id is not handed out again. Writes into the array that bypass :meth:`saw` (a
    script assigning into the array in place) are not seen; replacing the array is."""

    def __init__(self):
        self._array = None  # a weak reference: a replaced array must not be kept alive
        self._max = 0

    def next_id(self, array) -> int:
        """One above the largest id in ``array`` (or written since it was scanned)."""
        if self._array is None or self._array() is not array:
            try:
                self._array = weakref.ref(array)
            except TypeError:  # not weak-referenceable: scan every time
                self._array = None
                return int(array.max()) + 1
            self._max = int(array.max()) if array.size else 0
        return self._max + 1

    def saw(self, value) -> None:
        """Record that ``value`` (an id, or an array of them) was written."""
        value = np.asarray(value)
        if value.size:
            self._max = max(self._max, int(value.max()))


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
