"""Prompt -> mask latency: our Segment path vs micro-sam's segment_from_points/_box.

Same model, same cached embedding, same prompts, calls interleaved in one process; masks must
agree (IoU). vit_b uses random weights and random features (the decoder's cost does not depend
on their values); tiny runs its encoder on sample data. vit_t is MobileSAM's architecture built
with our TinyViT encoder (no ``mobile_sam`` package needed); micro-sam's functions take its
predictor like any other. Run: ``python benchmarks/prompt_latency.py [--smoke]``; the last line
is ``RATIO prompt_latency=<worst ours/micro-sam ratio over vit_b/vit_t>`` (tiny in --smoke).
"""

from __future__ import annotations

import argparse

import numpy as np

from _timing import interleaved, machine, table
from napari_raysam.core.dataset.synthetic import make_sample
from napari_raysam.core.images import to_sam_rgb
from napari_raysam.core.sam import segment
from napari_raysam.core.sam.embeddings import encode
from napari_raysam.core.sam.models import LoadedModel, ModelError, build_standard_sam, load_model

PROMPTS = {  # fractions of the image size: (row, col) points, (r0, c0, r1, c1) boxes
    "point": {"points": [[0.45, 0.4]], "labels": [1]},
    "points+-": {"points": [[0.45, 0.4], [0.2, 0.2]], "labels": [1, 0]},
    "box": {"box": [0.3, 0.3, 0.6, 0.55]},
}


def scaled(prompt: dict, shape: tuple[int, int]) -> dict:
    out = dict(prompt)
    size = np.array(shape, float)
    if "points" in prompt:
        out["points"] = (np.array(prompt["points"]) * size).round()
        out["labels"] = np.array(prompt["labels"])
    if "box" in prompt:
        out["box"] = (np.array(prompt["box"]) * np.tile(size, 2)).round()
    return out


def reference(model, emb, points=None, labels=None, box=None) -> np.ndarray:
    """micro-sam's functions, called the way our previous Segment path called them."""
    from micro_sam import prompt_based_segmentation as pbs

    if box is not None:
        return pbs.segment_from_box(model.predictor, box, image_embeddings=emb)[0]
    return pbs.segment_from_points(model.predictor, points, labels, image_embeddings=emb)[0]


def models(smoke: bool) -> list[tuple[str, LoadedModel, dict]]:
    import torch

    tiny = load_model("tiny", device="cpu")
    rgb = to_sam_rgb(make_sample((256, 256), seed=0).image)
    features, input_size, original_size = encode(tiny, rgb)
    out = [("tiny", tiny, {"features": features, "input_size": input_size,
                           "original_size": original_size})]
    if smoke:
        return out
    rng = np.random.default_rng(0)
    for kind in ("vit_b", "vit_t"):
        try:
            torch.manual_seed(0)
            sam = build_standard_sam(kind).eval()
        except ModelError as exc:
            print(f"skipped {kind}: {str(exc).splitlines()[0]}")
            continue
        feats = rng.standard_normal((1, 256, 64, 64), dtype=np.float32)
        out.append((kind, LoadedModel(kind, kind, sam, "cpu"),
                    {"features": feats, "input_size": [1024, 1024],
                     "original_size": [1024, 1024]}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model only, few repeats")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.smoke else 15)
    rows, ratios = [], []
    for name, model, emb in models(args.smoke):
        shape = tuple(emb["original_size"])
        for pname, prompt in PROMPTS.items():
            kwargs = scaled(prompt, shape)
            ours = segment.segment(model, emb, **kwargs)
            ref = reference(model, emb, **kwargs)
            iou = float((ours & ref).sum() / max((ours | ref).sum(), 1))
            t = interleaved({"ref": lambda m=model, e=emb, k=kwargs: reference(m, e, **k),
                             "ours": lambda m=model, e=emb, k=kwargs: segment.segment(m, e, **k)},
                            repeats=repeats, warmup=2)
            ratio = t["ours"] / t["ref"]
            if args.smoke or name != "tiny":  # the figure is about real architectures
                ratios.append(ratio)
            rows.append([name, f"{shape[0]}x{shape[1]}", pname, t["ref"] * 1e3,
                         t["ours"] * 1e3, ratio, f"{iou:.4f}"])
    print(f"machine: {machine()}; median of {repeats} interleaved repeats")
    print(table(["model", "image", "prompt", "micro-sam ms", "ours ms", "ratio", "IoU"], rows))
    print(f"RATIO prompt_latency={max(ratios):.3f}")


if __name__ == "__main__":
    main()
