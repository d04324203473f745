"""Which image goes with which labels, and the export plan of such pairs (no viewer needed).

The Export dock describes the viewer's layers as :class:`ImageLayer` / :class:`LabelsLayer`
(name, shape, channels) and asks :func:`fitting_pairs` which pairs fit and
:func:`default_pairs` which of them to tick; :func:`plan_pairs` then does the heavy part (copy
the planes, check and hash every sample) and runs in a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_raysam.core.dataset.inputs import SampleInput, plane_axes, planes_to_inputs
from napari_raysam.core.dataset.write import WritePlan, plan_split_warning, plan_write
from napari_raysam.core.errors import RaysamError

Pair = tuple[str, str]  # (image name, labels name)


@dataclass(frozen=True)
class ImageLayer:
    """An image as the pairing rules see it: ``shape`` of its data, ``rgb`` (colour last) or
    the index of its ``channel_axis`` (None: grayscale)."""

    name: str
    shape: tuple[int, ...]
    rgb: bool = False
    channel_axis: int | None = None

    @property
    def channels(self) -> int | None:
        """The channel axis (normalised to 0..ndim-1); None for RGB or grayscale."""
        if self.rgb or self.channel_axis is None:
            return None
        return int(self.channel_axis) % len(self.shape)

    @property
    def spatial(self) -> tuple[int, ...]:
        """The shape without the channel (or colour) axis: what its labels look like."""
        if self.rgb:
            return self.shape[:-1]
        axis = self.channels
        return self.shape if axis is None else self.shape[:axis] + self.shape[axis + 1:]

    def fits(self, labels_shape: Sequence[int]) -> bool:
        """Labels of ``labels_shape`` belong on this image: its shape without channels, or
        with a length-1 channel axis kept (the Segment dock's objects of a Z,C,Y,X image)."""
        shape, spatial, axis = tuple(labels_shape), self.spatial, self.channels
        return shape == spatial or (axis is not None and
                                    shape == spatial[:axis] + (1,) + spatial[axis:])


@dataclass(frozen=True)
class LabelsLayer:
    name: str
    shape: tuple[int, ...]


def fitting_pairs(images: Sequence[ImageLayer], labels: Sequence[LabelsLayer]) -> list[Pair]:
    """Every (image, labels) pair whose shapes fit, images in order, then labels in order."""
    return [(im.name, la.name) for im in images for la in labels if im.fits(la.shape)]


def default_pairs(pairs: Sequence[Pair], chosen: Mapping[Pair, bool]) -> set[Pair]:
    """The pairs ticked by default: per image without a user choice (``chosen``: the user's
    ticks, True or False), the labels the Segment dock commits into (``'<image> objects'``),
    else labels named after it (the longest image name a labels name starts with owns it),
    else labels that fit only this image and no other image claims; one per image."""
    owner: dict[str, str] = {}
    for image, lab in sorted(pairs, key=lambda pair: len(pair[0])):
        if lab.startswith(image):
            owner[lab] = image
    labels_names = [lab for _, lab in pairs]
    default: set[Pair] = set()
    for image in dict.fromkeys(im for im, _ in pairs):
        rivals = [lab for im, lab in pairs if im == image]
        if any(chosen.get((image, n)) for n in rivals):
            continue  # the user chose for this image
        mine = [n for n in rivals if owner.get(n) == image] or \
            [n for n in rivals if n not in owner and labels_names.count(n) == 1]
        committed = f"{image} objects"
        mine = [committed] if committed in mine else mine
        default.update((image, n) for n in mine[:1])
    return default


@dataclass
class PairSource:
    """One checked pair's data for :func:`plan_pairs`. ``step``: the viewer's slider positions
    for the image's axes when only the current plane is exported (None: all planes)."""

    image: Any  # array-like, e.g. a layer's data (numpy, dask, zarr)
    labels: Any
    layer: ImageLayer
    step: tuple[int, ...] | None = None
    channel_names: list[str] | None = None


@dataclass
class PairsPlan:
    """What Export will write, and what to tell the user before it does."""

    plan: WritePlan
    notes: list[str] = field(default_factory=list)  # planes skipped for having no objects
    split_warning: str | None = None

    def text(self) -> str:
        duplicates = [f"duplicate: {d}" for d in self.plan.duplicates]
        return "\n".join([f"Will {self.plan.summary()}.", *self.notes, *duplicates,
                          *([self.split_warning] if self.split_warning else [])])


def pair_inputs(sources: Sequence[PairSource]) -> tuple[list[SampleInput], list[str]]:
    """Per-plane inputs of ``sources`` (copies: painting during an export must not change the
    files) and notes on the planes skipped for having no objects."""
    if not sources:
        raise RaysamError("Nothing to export: check at least one image \u2194 labels pair.")
    inputs, notes = [], []
    for src in sources:
        layer, planes = src.layer, "all"
        stack_axis = plane_axes(len(layer.shape), layer.channels, layer.rgb)
        if src.step is not None and stack_axis is not None:  # T, Z, ...: one plane per (t, z)
            planes = int(src.step[stack_axis]) if isinstance(stack_axis, int) else \
                tuple(int(src.step[a]) for a in stack_axis)
        found, skipped = planes_to_inputs(src.image, src.labels, layer.name, stack_axis,
                                          layer.channels, planes, src.channel_names)
        for inp in found:
            inp.image, inp.labels = np.array(inp.image), np.array(inp.labels)
        inputs += found
        if skipped:
            notes.append(f"{layer.name}: plane(s) {', '.join(map(str, skipped))} have no "
                         "objects (skipped)")
    return inputs, notes


def plan_pairs(dest: str, sources: Sequence[PairSource], mode: str, seed: int,
               val_fraction: float) -> PairsPlan:
    """Check the destination and every plane of ``sources``; say what will be written.

    Reads, copies and hashes every plane (seconds for a big stack: run it off the GUI thread).
    Raises a RaysamError naming the problem before anything is written."""
    if not dest.strip():
        raise RaysamError("Choose a destination folder for the training set.")
    inputs, notes = pair_inputs(sources)
    plan = plan_write(dest.strip(), inputs, mode=mode)
    return PairsPlan(plan, notes, plan_split_warning(plan, seed, val_fraction))
