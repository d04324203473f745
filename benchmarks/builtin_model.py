"""The built-in model on the built-in sample: click IoU and automatic object count vs ground truth.

What an offline user sees first: File > Open Sample > napari-raysam (``napari_entry.sample_cells``)
segmented with ``tiny_cells``. Per plane the image goes through the Segment dock's path
(``to_sam_rgb``, the embedding cache, ``segment.segment`` / ``segment.automatic``). Click: one
positive point at each true cell's centre (its centroid, or the inside pixel nearest to it when
the centroid falls outside), IoU of the mask against that cell's ground truth. Automatic: the
number of objects found vs the true number of cells. ``--model`` takes any model spec.
Last line: ``RATIO click_iou_median=<median> automatic_count=<found / true>``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def centre_click(mask: np.ndarray) -> tuple[float, float]:
    """The cell's centroid, or the inside pixel nearest to it (row, col)."""
    rows, cols = np.nonzero(mask)
    cy, cx = rows.mean(), cols.mean()
    if mask[int(round(cy)), int(round(cx))]:
        return float(round(cy)), float(round(cx))
    k = int(np.argmin((rows - cy) ** 2 + (cols - cx) ** 2))
    return float(rows[k]), float(cols[k])


def measure(spec: str, image: np.ndarray, labels: np.ndarray, cache_dir: str) -> dict:
    from napari_raysam.core.images import to_sam_rgb
    from napari_raysam.core.sam import segment as seg
    from napari_raysam.core.sam.embeddings import EmbeddingCache
    from napari_raysam.core.sam.models import load_model

    model = load_model(spec, "cpu")
    cache = EmbeddingCache(cache_dir)
    planes = [(image, labels)] if image.ndim == 2 else list(zip(image, labels, strict=True))
    ious, found, true = [], [], []
    for plane, truth in planes:
        rgb = to_sam_rgb(plane, model.image_policy())  # the model's own normalisation
        emb = cache.get_or_compute(model, rgb)
        ids = [i for i in np.unique(truth) if i]
        for i in ids:
            cell = truth == i
            mask = seg.segment(model, emb, points=[centre_click(cell)], labels=[1])
            ious.append((mask & cell).sum() / max((mask | cell).sum(), 1))
        found.append(int(seg.automatic(model, rgb, emb).max()))
        true.append(len(ids))
    ious = np.array(ious)
    return {"planes": len(planes), "cells": int(sum(true)), "found": int(sum(found)),
            "per_plane": list(zip(found, true, strict=True)), "median": float(np.median(ious)),
            "min": float(ious.min()), "p10": float(np.percentile(ious, 10)),
            "mean": float(ious.mean()), "ge_0.85": float((ious >= 0.85).mean())}


def main() -> None:
    import torch

    from napari_raysam.napari_entry import sample_cells

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_cells", help="model spec (default tiny_cells)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layers = {kind: data for data, _, kind in sample_cells()}
    image, labels = np.asarray(layers["image"]), np.asarray(layers["labels"])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="raysam-builtin-") as tmp:
        r = measure(args.model, image, labels, tmp)
    print(f"model {args.model}; sample {image.shape} {image.dtype}, {r['planes']} plane(s), "
          f"{r['cells']} cells; {time.perf_counter() - start:.0f} s")
    print(f"click at centre: IoU median {r['median']:.3f}  mean {r['mean']:.3f}  "
          f"p10 {r['p10']:.3f}  min {r['min']:.3f}  share >= 0.85: {r['ge_0.85']:.2f}")
    print(f"automatic: {r['found']} objects on {r['cells']} cells "
          f"(per plane found/true: {r['per_plane']})")
    print(f"RATIO click_iou_median={r['median']:.3f} automatic_count={r['found'] / r['cells']:.3f}")


if __name__ == "__main__":
    main()
