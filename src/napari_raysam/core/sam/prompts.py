"""Prompt sampling shared by training and evaluation (micro-sam's recipe, our own code).

Coordinates follow SAM: points are (x, y) and boxes (x0, y0, x1, y1) in the model's input
frame. Tiles are exactly the model's input size, so tile pixels are model pixels. Object masks
are bool tensors (N, H, W). Random choices use an explicit ``torch.Generator``.
"""

from __future__ import annotations

import hashlib

import numpy as np


def select_objects(labels: np.ndarray, n: int | None, rng: np.random.Generator | None,
                   min_px: int = 10) -> np.ndarray:
    """Ids of up to ``n`` annotated objects with at least ``min_px`` pixels (sparse labels:
    only labelled objects are targets). ``rng`` None keeps the first ``n`` by id."""
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    ids = ids[counts >= min_px]
    if n is not None and len(ids) > n:
        ids = np.sort(rng.choice(ids, n, replace=False)) if rng is not None else ids[:n]
    return ids


def object_masks(labels: np.ndarray, ids: np.ndarray):
    """(N, H, W) bool tensor, one mask per id."""
    import torch

    lab = torch.from_numpy(np.ascontiguousarray(labels).astype(np.int64))
    return lab[None] == torch.as_tensor(np.asarray(ids, np.int64))[:, None, None]


def _pick(region, generator):
    """One random (x, y) per object from ``region`` (N, H, W) bool; rows without pixels give
    (0, 0) and must be handled by the caller's fallbacks."""
    import torch

    n, h, w = region.shape
    score = torch.rand(region.shape, generator=generator) + 1.0
    score = torch.where(region, score, torch.zeros(()))
    idx = score.view(n, -1).argmax(dim=1)
    return torch.stack([idx % w, idx // w], dim=1).float()


def random_points(masks, generator):
    """One uniformly random positive point per object: (N, 2) float (x, y)."""
    return _pick(masks, generator)


def centre_points(masks) -> np.ndarray:
    """The centre-most pixel of each object (maximum of the distance transform): (N, 2) x, y."""
    from scipy import ndimage as ndi

    out = np.zeros((len(masks), 2), np.float32)
    for i, mask in enumerate(np.asarray(masks)):
        ys, xs = np.nonzero(mask)
        y0, x0 = ys.min(), xs.min()
        crop = np.pad(mask[y0:ys.max() + 1, x0:xs.max() + 1], 1)
        dist = ndi.distance_transform_edt(crop)
        cy, cx = np.unravel_index(np.argmax(dist), dist.shape)
        out[i] = (x0 + cx - 1, y0 + cy - 1)
    return out


def boxes_from_masks(masks, distortion: float = 0.0, generator=None):
    """Bounding boxes (N, 4) float x0, y0, x1, y1 with the max EXCLUSIVE (one past the last
    pixel), as micro-sam's training and evaluation derive them (``regionprops`` bbox in
    ``util.get_centers_and_bounding_boxes``) and as SAM's COCO-style boxes are: a model
    trained on one convention loses a pixel per side on thin objects under the other.

    ``distortion`` > 0 grows each side outwards by a uniform [0, distortion) share of the box's
    length, clipped to the image (micro-sam's ``box_distortion_factor``; micro-sam then rounds
    to whole pixels, here the box stays fractional as SAM's prompt encoder takes it)."""
    import torch

    n, h, w = masks.shape
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    ar_h, ar_w = torch.arange(h), torch.arange(w)
    big = torch.tensor(10**9)
    y0 = torch.where(rows, ar_h, big).min(dim=1).values
    y1 = torch.where(rows, ar_h, -big).max(dim=1).values + 1
    x0 = torch.where(cols, ar_w, big).min(dim=1).values
    x1 = torch.where(cols, ar_w, -big).max(dim=1).values + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    if distortion > 0:
        length = torch.stack([x1 - x0, y1 - y0], dim=1).float().repeat(1, 2)
        grow = torch.rand(boxes.shape, generator=generator) * distortion * length
        boxes = boxes + torch.tensor([-1.0, -1.0, 1.0, 1.0]) * grow
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    return boxes


def _box_ring(target, margin: int = 3):
    """Pixels of each object's bounding box (grown by ``margin``) outside the object."""
    import torch

    n, h, w = target.shape
    boxes = boxes_from_masks(target).long()
    ys, xs = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    inside = ((ys >= (boxes[:, 1] - margin)[:, None, None]) & (ys < (boxes[:, 3] + margin)
              [:, None, None]) & (xs >= (boxes[:, 0] - margin)[:, None, None])
              & (xs < (boxes[:, 2] + margin)[:, None, None]))
    return inside & ~target


def _with_fallbacks(*regions):
    """Per object, the first region in ``regions`` that has any pixel."""
    import torch

    out = regions[-1]
    for region in reversed(regions[:-1]):
        has = region.flatten(1).any(dim=1)[:, None, None]
        out = torch.where(has, region, out)
    return out


def correction_points(pred, target, generator):
    """One positive point in missed pixels and one negative point in wrongly added pixels per
    object (micro-sam's iterative prompting). Without missed pixels the positive point falls
    on the correct overlap; without wrong pixels the negative point falls just outside the
    object in its grown box, else anywhere in the background.

    Returns coords (N, 2, 2) float (x, y) and labels (N, 2) int: [positive, negative].
    """
    import torch

    pos = _with_fallbacks(target & ~pred, target & pred, target)
    neg = _with_fallbacks(pred & ~target, _box_ring(target), ~target)
    coords = torch.stack([_pick(pos, generator), _pick(neg, generator)], dim=1)
    labels = torch.tensor([[1, 0]]).repeat(len(target), 1)
    return coords, labels


def shared_unit(seed: int, *keys) -> float:
    """A number in [0, 1) from the seed and keys alone: every rank derives the same value
    (e.g. whether this step feeds mask prompts back) without communication."""
    digest = hashlib.sha256(":".join(map(str, (seed, *keys))).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def first_prompt_kind(step: int) -> str:
    """micro-sam alternates per step: a point (multimask) on even steps, a box on odd ones."""
    return "point" if step % 2 == 0 else "box"
