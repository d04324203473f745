"""Evaluate SAM models on a training set's val split with simulated prompts.

Per annotated object: measured IoU of the mask from one positive point at the object's
centre-most pixel (point), from its bounding box (box), and after K correction rounds that add
a positive point in missed and a negative point in wrongly added pixels (corrected). The prompt
code is the training code's (:mod:`.training.prompts`, :func:`.training.engine.evaluate_tile`),
so training-time validation and this evaluation measure the same thing.
"""

from __future__ import annotations

from napari_raysam.core.errors import RaysamError

METRICS = ("miou_point", "miou_box", "miou_corrected")


def evaluate_model(model, dataset: str, split: str = "val", rounds: int = 3,
                   max_objects: int | None = 32, min_px: int = 10, seed: int = 0) -> dict:
    """Metrics of one model (a :class:`~.models.LoadedModel` or a spec) on ``split``
    ("val", "train", or "auto": the set's held-out split, all of it when it has one split)."""
    import numpy as np
    import torch

    from napari_raysam.core.dataset import open_dataset
    from napari_raysam.core.dataset.shards import load_shard
    from napari_raysam.core.sam.engine import encode_tiles, evaluate_tile
    from napari_raysam.core.sam.models import load_model
    from napari_raysam.core.sam.prompts import object_masks, select_objects
    from napari_raysam.core.sam.tiles import fixed_tiles, tile_arrays

    ts = open_dataset(dataset)
    split = ts.evaluation_split() if split == "auto" else split
    if split == "val" and not ts.has_val:
        raise RaysamError(ts.split_warning or f"{dataset} has no val split; export more images.")
    if not ts.split(split):
        raise RaysamError(f"{dataset} has no images in its {split!r} split to evaluate on; "
                          "choose another set or split, or export annotated images into it.")
    loaded = load_model(model) if isinstance(model, str) else model
    sam, size = loaded.sam.eval(), loaded.img_size
    samples = load_shard(dataset, split, normalisation=loaded.normalisation, tile_size=size)
    gen = torch.Generator().manual_seed(seed + 7)
    ious: dict[str, list] = {"point": [], "box": [], "corrected": []}
    with torch.no_grad():
        for tile in fixed_tiles(samples, size, min_px):
            rgb, labels = tile_arrays(samples, tile, size)
            masks = object_masks(labels, select_objects(labels, max_objects, None, min_px))
            emb = encode_tiles(sam, torch.from_numpy(rgb)[None])
            res = evaluate_tile(sam, emb, masks, rounds, gen)
            for key in ious:
                ious[key].append(res[key].numpy())
    values = {k: np.concatenate(v) if v else np.zeros(0) for k, v in ious.items()}
    out = {"model": loaded.spec, "split": split, "images": len(samples),
           "objects": int(len(values["point"])), "rounds": rounds}
    for key, arr in values.items():
        out[f"miou_{key}"] = float(arr.mean()) if len(arr) else float("nan")
    # micro-sam's segmentation-accuracy notion at IoU 0.5 (fraction of objects matched)
    out["sa50_point"] = float((values["point"] >= 0.5).mean()) if len(values["point"]) else 0.0
    return out


def evaluate_models(specs: list[str], dataset: str, **kwargs) -> list[dict]:
    """:func:`evaluate_model` for each spec, in order."""
    return [evaluate_model(spec, dataset, **kwargs) for spec in specs]


LEGEND = ("mIoU per object: point = one click inside the object; box = its bounding box; "
          "corrected = a click, then correction clicks on the errors; SA50(point) = the "
          "fraction of objects whose one-click mask reaches IoU 0.5 (micro-sam's segmentation "
          "accuracy at 0.5).")


def format_table(rows: list[dict]) -> str:
    """A plain-text metrics table, one row per model, with a legend of its columns."""
    head = ["model", "objects", "point", "box", "corrected", "SA50(point)"]
    lines = [[str(r["model"]), str(r["objects"]), *(f"{r[m]:.3f}" for m in METRICS),
              f"{r['sa50_point']:.3f}"] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*line) for line in lines] + [LEGEND])
