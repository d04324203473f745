"""Prompts -> masks, and automatic instance segmentation, on cached embeddings.

Coordinates are (row, col) in the image's pixel grid, as napari gives them. Prompt checks
happen here so the dock, the CLI and the tests share them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from napari_raysam.core.errors import RaysamError

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
    shape = _image_shape(embeddings)
    has_points = points is not None and len(points) > 0
    if not has_points and box is None:
        raise PromptError("No prompts: click on the object or draw a box around it.")
    if box is not None:
        box = check_box(box, shape)
    if has_points:
        points, labels = check_points(points, labels, shape)
        if box is None and not (labels == 1).any():
            raise PromptError("Only negative points: add a positive point on the object.")
    else:
        points = labels = None
    from napari_raysam.core.sam.fast_decoder import supports

    if supports(model.sam):
        return _segment_fast(model, embeddings, shape, points, labels, box)
    return _segment_micro_sam(model, embeddings, shape, points, labels, box)


def _segment_micro_sam(model, embeddings, shape, points, labels, box) -> np.ndarray:
    """micro-sam's prompt-based segmentation (for decoders the fast path does not support)."""
    from micro_sam import prompt_based_segmentation as pbs

    predictor = model.predictor
    if points is not None and box is not None:
        mask = pbs.segment_from_box_and_points(
            predictor, box, points, labels, image_embeddings=embeddings
        )
    elif points is not None:
        mask = pbs.segment_from_points(predictor, points, labels, image_embeddings=embeddings)
    else:
        mask = pbs.segment_from_box(predictor, box, image_embeddings=embeddings)
    return np.asarray(mask).reshape(shape).astype(bool)


def _route_to_tile(features, shape, points, labels, box):
    """micro-sam's tile routing: the tile holding the points' mean (or the box centre); prompts
    move to tile coordinates, points outside that tile (with halo) are dropped."""
    from micro_sam.prompt_based_segmentation import _box_to_tile, _points_to_tile

    attrs = features.attrs
    tile_shape, halo = list(attrs["tile_shape"]), list(attrs["halo"])
    tile_id = tile = None
    if points is not None:
        tile_id, tile, (points, labels) = _points_to_tile((points, labels), shape, tile_shape, halo)
        if len(points) == 0:
            raise PromptError("The points lie too far apart: click points on one object.")
    if box is not None:
        box_tile_id, tile, box = _box_to_tile(box, shape, tile_shape, halo)
        if tile_id is not None and box_tile_id != tile_id:
            raise PromptError("The box and the points lie in different image tiles: "
                              "put the points inside the box.")
        tile_id = box_tile_id
    return tile_id, tile, points, labels, box


def _segment_fast(model, embeddings, shape, points, labels, box) -> np.ndarray:
    """The same prompts and rules as micro-sam's segment_from_* (one positive point: best of
    the multimask outputs), through :class:`fast_decoder.FastDecoder`."""
    from napari_raysam.core.sam.fast_decoder import fast_decoder_for

    features = embeddings["features"]
    tile_id = tile = None
    if embeddings["input_size"] is None:
        tile_id, tile, points, labels, box = _route_to_tile(features, shape, points, labels, box)
        attrs = features[str(tile_id)].attrs
        input_size, original_size = attrs["input_size"], attrs["original_size"]
    else:
        input_size, original_size = embeddings["input_size"], embeddings["original_size"]
    box_xyxy = None
    if box is not None:  # micro-sam's _process_box: (x0, y0, x1, y1) clipped, rounded
        box_xyxy = np.round([max(box[1], 0), max(box[0], 0),
                             min(box[3], shape[1]), min(box[2], shape[0])]).astype(int)
    best = box is None and len(points) == 1 and labels[0] == 1
    masks, _, _ = fast_decoder_for(model.sam).predict(
        features, input_size, original_size,
        point_coords_xy=None if points is None else points[:, ::-1],
        point_labels=labels, box_xyxy=box_xyxy, multimask=best, best_only=best,
        tile_id=tile_id,
    )
    if tile is None:
        return masks[0].reshape(shape)
    full = np.zeros(shape, dtype=bool)
    full[tile.begin[0]:tile.end[0], tile.begin[1]:tile.end[1]] = masks[0]
    return full


def segment_boxes(model, embeddings: dict, boxes) -> list[np.ndarray]:
    """One mask per box: several boxes segment several objects in one go."""
    return [segment(model, embeddings, box=box) for box in boxes]


#: micro-sam mask-generator (AMG) thresholds for models without their own: permissive, as small
#: or lightly trained models predict modest IoU and stability scores.
AMG_DEFAULTS = {"pred_iou_thresh": 0.6, "stability_score_thresh": 0.6}
_AMG_KEYS = ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh")


def amg_settings(model) -> dict:
    """AMG thresholds for ``model``: those tuned for it and recorded in its lineage under
    ``automatic`` (``scripts/make_tiny_checkpoint.py`` does for ``tiny_cells``), else defaults."""
    tuned = (getattr(model, "lineage", None) or {}).get("automatic") or {}
    return AMG_DEFAULTS | {k: float(tuned[k]) for k in _AMG_KEYS if k in tuned}


def automatic_generator(model, rgb: np.ndarray, embeddings: dict, points_per_side: int = 16):
    """micro-sam's instance generator for ``model``, initialised on ``rgb``: its decoder-based
    one (AIS) when the model ships a decoder, else its mask generator (AMG)."""
    from micro_sam import instance_segmentation as ins

    tiled = embeddings["input_size"] is None
    decoder = model.ais_decoder
    if decoder is not None:
        cls = (ins.TiledInstanceSegmentationWithDecoder if tiled
               else ins.InstanceSegmentationWithDecoder)
        generator = cls(model.predictor, decoder)
    else:
        cls = ins.TiledAutomaticMaskGenerator if tiled else ins.AutomaticMaskGenerator
        generator = cls(model.predictor, points_per_side=points_per_side)
    kwargs = {}
    if tiled:
        attrs = embeddings["features"].attrs
        kwargs = {"tile_shape": tuple(attrs["tile_shape"]), "halo": tuple(attrs["halo"])}
    generator.initialize(rgb, image_embeddings=embeddings, verbose=False, **kwargs)
    return generator


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
    ``*_lm`` models, or checkpoints with ``decoder_state``), else its mask generator (AMG) with
    :func:`amg_settings`.
    """
    if progress:
        progress(0, 2)
    generator = automatic_generator(model, rgb, embeddings, points_per_side)
    if model.ais_decoder is not None:
        generate_kwargs = {"min_size": min_size}
    else:  # min_mask_region_area would need OpenCV; small objects are dropped below instead
        generate_kwargs = amg_settings(model)
    if progress:
        progress(1, 2)
    labels = np.asarray(generator.generate(**generate_kwargs)).astype(np.uint32)
    if progress:
        progress(2, 2)
    return drop_small_objects(labels, min_size)


def drop_small_objects(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Remove objects smaller than ``min_size`` pixels and renumber the rest 1..N."""
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    new_ids = np.zeros(len(sizes), np.uint32)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return new_ids[labels]
