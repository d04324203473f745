"""Prompts -> masks, and automatic instance segmentation, on cached embeddings.

Coordinates are (row, col) in the image's pixel grid, as napari gives them. Prompt checks
happen here so the dock, the CLI and the tests share them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import RaysamError

#: More prompts than this for one object is a mistake (a paste, a runaway script), not a click.
MAX_PROMPTS = 1000


class PromptError(RaysamError):
    """Prompts that cannot produce a mask."""


def _image_shape(embeddings: dict) -> tuple[int, int]:
    if embeddings["original_size"] is not None:
        return tuple(int(s) for s in embeddings["original_size"])
    return tuple(int(s) for s in embeddings["features"].attrs["shape"])


def check_points(points, labels, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Validate point prompts; return them as float (N, 2) rows/cols and int labels (1/0)."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    labels = np.asarray(labels, dtype=int).reshape(-1)
    if len(points) != len(labels):
        raise PromptError(
            f"{len(points)} points but {len(labels)} labels: give one sign per point."
        )
    if len(points) > MAX_PROMPTS:
        raise PromptError(
            f"{len(points)} point prompts for one object; at most {MAX_PROMPTS} are accepted. "
            "Clear the prompts (Shift-C) and click a few points on the object."
        )
    inside = (points >= 0).all(axis=1) & (points[:, 0] < shape[0]) & (points[:, 1] < shape[1])
    if not inside.all():
        raise PromptError(
            f"Point {points[~inside][0].round(1).tolist()} lies outside the "
            f"{shape[0]}x{shape[1]} image. Remove it and click inside the image."
        )
    return points, labels


def check_box(box, shape: tuple[int, int]) -> np.ndarray:
    """Validate a (row0, col0, row1, col1) box, clip it to the image; reject zero area."""
    box = np.asarray(box, dtype=float).reshape(4)
    r0, r1 = sorted(box[[0, 2]])
    c0, c1 = sorted(box[[1, 3]])
    r0, c0 = max(r0, 0.0), max(c0, 0.0)
    r1, c1 = min(r1, shape[0]), min(c1, shape[1])
    if r1 - r0 < 1 or c1 - c0 < 1:
        raise PromptError(
            "The box has no area inside the image. Draw a box around the object "
            "(at least one pixel wide and high)."
        )
    return np.array([r0, c0, r1, c1])


def segment(model, embeddings: dict, points=None, labels=None, box=None) -> np.ndarray:
    """One mask (H, W) bool from point prompts, a box, or both."""
    from micro_sam import prompt_based_segmentation as pbs

    shape = _image_shape(embeddings)
    has_points = points is not None and len(points) > 0
    if not has_points and box is None:
        raise PromptError("No prompts: click on the object or draw a box around it.")
    predictor = model.predictor
    if box is not None:
        box = check_box(box, shape)
    if has_points:
        points, labels = check_points(points, labels, shape)
        if box is not None:
            mask = pbs.segment_from_box_and_points(
                predictor, box, points, labels, image_embeddings=embeddings
            )
        else:
            if not (labels == 1).any():
                raise PromptError("Only negative points: add a positive point on the object.")
            mask = pbs.segment_from_points(predictor, points, labels, image_embeddings=embeddings)
    else:
        mask = pbs.segment_from_box(predictor, box, image_embeddings=embeddings)
    return np.asarray(mask).reshape(shape).astype(bool)


def segment_boxes(model, embeddings: dict, boxes) -> list[np.ndarray]:
    """One mask per box: several boxes segment several objects in one go."""
    return [segment(model, embeddings, box=box) for box in boxes]


def automatic(
    model,
    rgb: np.ndarray,
    embeddings: dict,
    progress: Callable[[int, int], None] | None = None,
    points_per_side: int = 16,
    min_size: int = 10,
) -> np.ndarray:
    """Automatic instance segmentation -> label image (uint32).

    Uses micro-sam's instance-segmentation decoder (AIS) when the model ships one (the
    ``*_lm`` models, or checkpoints with ``decoder_state``), else its mask generator (AMG).
    """
    from micro_sam import instance_segmentation as ins

    tiled = embeddings["input_size"] is None
    decoder = model.ais_decoder
    if decoder is not None:
        cls = (ins.TiledInstanceSegmentationWithDecoder if tiled
               else ins.InstanceSegmentationWithDecoder)
        generator = cls(model.predictor, decoder)
        generate_kwargs = {"min_size": min_size}
    else:
        cls = ins.TiledAutomaticMaskGenerator if tiled else ins.AutomaticMaskGenerator
        generator = cls(model.predictor, points_per_side=points_per_side)
        generate_kwargs = {"pred_iou_thresh": 0.6, "stability_score_thresh": 0.6,
                           "min_mask_region_area": min_size}
    kwargs = {}
    if tiled:
        attrs = embeddings["features"].attrs
        kwargs = {"tile_shape": tuple(attrs["tile_shape"]), "halo": tuple(attrs["halo"])}
    if progress:
        progress(0, 2)
    generator.initialize(rgb, image_embeddings=embeddings, verbose=False, **kwargs)
    if progress:
        progress(1, 2)
    labels = generator.generate(**generate_kwargs)
    if progress:
        progress(2, 2)
    return np.asarray(labels).astype(np.uint32)
