"""Embedding compute: ours (EmbeddingCache -> encode) vs micro_sam.util.precompute_image_embeddings.

vit_b with random weights (weights do not change the cost) on a 1024 px sample image and on a
2048 px image tiled like micro-sam (tile 768, halo 128: 9 encoder calls). Variants of ours: fp32 and
bf16 autocast (the one ``auto`` picks here, as the Segment dock does, is marked), fp32 on one
thread, and the encoder alone: segment_anything's module with contiguous or channels-last input
vs our fused pass (core.fast_encoder: row-wise global attention, SDPA for windows). Each run
writes a fresh cache, as a first open does. Masks from bf16 vs fp32 embeddings are compared
(IoU) for the same prompts (a centre point and a box for each of the largest cells), which also
warms both precisions up.
AMX row: on CPUs with ``amx_bf16`` (where ``auto`` picks bf16) ours in bf16 vs micro-sam's
fp32 precompute, whole image, with the bf16-vs-fp32 mask IoU; ``N/A (no AMX)`` elsewhere.
Run: ``python benchmarks/embedding_compute.py [--smoke]`` (smoke: tiny, 256 px and a 512 px
tiled image; ``--amx-row-only``: just micro-sam fp32, ours bf16 and ours fp32 on the whole
image); the last line is
``RATIO embedding_compute=<ours (auto) / micro-sam, whole image>
embed_bf16_ours_over_microsam=<ours bf16 / micro-sam fp32, or N/A without AMX>``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from _timing import bench_model, interleaved, machine, table
from napari_raysam.core.dataset.synthetic import make_sample
from napari_raysam.core.images import to_sam_rgb
from napari_raysam.core.sam import prompts, segment
from napari_raysam.core.sam.embeddings import EmbeddingCache, Tiling
from napari_raysam.core.sam.fast_encoder import run_encoder
from napari_raysam.core.sam.precision import resolve_precision


def fresh(tmp: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=tmp))


def reference(model, rgb, tmp, tiling: Tiling):
    from micro_sam.util import precompute_image_embeddings

    predictor = model.predictor  # the attributes micro_sam.util.get_sam_model would set
    predictor.model_type = predictor.model_name = model.model_type
    out = fresh(tmp)
    try:
        return precompute_image_embeddings(
            predictor, rgb, save_path=str(out / "e.zarr"), ndim=2, verbose=False,
            tile_shape=tiling.tile_shape, halo=tiling.halo,
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)


def ours(model, rgb, tmp, tiling: Tiling, precision: str, threads: int | None = None):
    out = fresh(tmp)
    before = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        return EmbeddingCache(out).get_or_compute(model, rgb, tiling, precision=precision)
    finally:
        torch.set_num_threads(before)
        shutil.rmtree(out, ignore_errors=True)


def encoder_only(model, rgb, layout=torch.contiguous_format, run=None):
    """The encoder alone (no resize, no cache write) on an input tensor in ``layout``:
    segment_anything's module, or ``run(x)`` (e.g. our fused pass, what ``encode`` runs)."""
    resized = model.predictor.transform.apply_image(rgb)
    x = torch.as_tensor(resized).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        x = model.sam.preprocess(x).contiguous(memory_format=layout)
        return (run or model.sam.image_encoder)(x)


def cell_prompts(labels, n: int = 8) -> list[dict]:
    """Prompts for the ``n`` largest cells: a point at each one's centre, and its box."""
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    masks = [labels == i for i in ids[np.argsort(counts)[::-1][:n]]]
    out = []
    for mask, (x, y) in zip(masks, prompts.centre_points(masks), strict=True):
        rows, cols = np.nonzero(mask)
        out.append({"points": [[y, x]], "labels": [1]})
        out.append({"box": [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]})
    return out


def mask_ious(model, emb_a: dict, emb_b: dict, prompt_list: list[dict]) -> list[float]:
    """IoU of the masks two embeddings of the same image give for each prompt."""
    ious = []
    for prompt in prompt_list:
        a, b = (segment.segment(model, e, **prompt) for e in (emb_a, emb_b))
        union = (a | b).sum()
        ious.append(float((a & b).sum() / union) if union else 1.0)
    return ious


def bf16_mask_ious(model, rgb, tmp, prompt_list) -> list[float]:
    """IoU of the masks from bf16 vs fp32 embeddings of the same image, per prompt."""
    fp32, bf16 = (EmbeddingCache(fresh(tmp)).get_or_compute(model, rgb, Tiling(), precision=p)
                  for p in ("fp32", "bf16"))
    return mask_ious(model, fp32, bf16, prompt_list)


def int8_encoder(model):
    """A copy of the encoder with int8 dynamically quantised linear layers (tried, not used)."""
    import copy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model.sam.image_encoder), {torch.nn.Linear}, dtype=torch.qint8)


def int8_mask_ious(model, rgb, encoder, tmp, prompt_list) -> list[float]:
    fp32 = EmbeddingCache(fresh(tmp)).get_or_compute(model, rgb, Tiling(), precision="fp32")
    features = encoder_only(model, rgb, run=encoder)
    return mask_ious(model, fp32, dict(fp32, features=features.numpy()), prompt_list)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, small images")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--tiled-repeats", type=int, default=1)
    parser.add_argument("--amx-row-only", action="store_true",
                        help="only micro-sam fp32, ours bf16 and ours fp32 on the whole image "
                             "(no encoder-only, int8 or tiled variants)")
    args = parser.parse_args()
    model, size = bench_model(args.smoke)
    repeats = args.repeats or (5 if args.smoke else 3)  # each vit_b encode is 15-60 s here
    choice = resolve_precision("auto", model.device)
    auto, amx = choice.precision, choice.reason == "AMX"
    tmp = Path(tempfile.mkdtemp(prefix="raysam-bench-"))
    rows = []
    try:
        sample = make_sample((size, size), seed=0)
        rgb, prompt_list = to_sam_rgb(sample.image), cell_prompts(sample.labels)
        whole = Tiling()
        ious = bf16_mask_ious(model, rgb, tmp, prompt_list)  # also warms both precisions up
        variants = {
            "micro-sam precompute": lambda: reference(model, rgb, tmp, whole),
            "ours bf16 autocast": lambda: ours(model, rgb, tmp, whole, "bf16"),
            "ours fp32": lambda: ours(model, rgb, tmp, whole, "fp32"),
        }
        if not args.amx_row_only:
            q8 = int8_encoder(model)
            ious8 = int8_mask_ious(model, rgb, q8, tmp, prompt_list)
            variants.update({
                "ours fp32, 1 thread": lambda: ours(model, rgb, tmp, whole, "fp32", threads=1),
                "encoder only, contiguous": lambda: encoder_only(model, rgb),
                "encoder only, channels-last": lambda: encoder_only(
                    model, rgb, torch.channels_last),
                "encoder only, fused (ours)": lambda: encoder_only(
                    model, rgb, run=lambda x: run_encoder(model.sam.image_encoder, x)),
                "encoder only, int8 linears (not used)": lambda: encoder_only(
                    model, rgb, run=q8),
            })
        t = interleaved(variants, repeats=repeats, warmup=0)
        base = t["micro-sam precompute"]
        auto_name = "ours bf16 autocast" if auto == "bf16" else "ours fp32"
        for name, sec in t.items():
            label = f"{name} (= auto)" if name == auto_name else name
            rows.append([f"{size} px", label, sec, sec / base])
        headline = t[auto_name] / base
        bf16_ratio = t["ours bf16 autocast"] / base

        if not args.amx_row_only:
            big = 2 * size
            tiling = Tiling((big * 3 // 8, big * 3 // 8), (big // 16, big // 16))
            rgb2 = to_sam_rgb(make_sample((big, big), seed=1).image)
            tiled = {
                "micro-sam precompute (tiled)": lambda: reference(model, rgb2, tmp, tiling),
                f"ours auto ({auto}) (tiled)": lambda: ours(model, rgb2, tmp, tiling, "auto"),
            }
            t2 = interleaved(tiled, repeats=args.tiled_repeats, warmup=0)
            base2 = t2["micro-sam precompute (tiled)"]
            for name, sec in t2.items():
                rows.append([f"{big} px, tiles {tiling.tile_shape[0]}+{tiling.halo[0]}", name,
                             sec, sec / base2])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tiled_note = "none" if args.amx_row_only else args.tiled_repeats
    print(f"machine: {machine()}; {model.model_type}; whole image: median of {repeats} "
          f"interleaved repeats; tiled: {tiled_note}; auto = {choice.label}")
    print(table(["image", "variant", "seconds", "ratio vs micro-sam"], rows))
    n = len(prompt_list)
    print(f"mask IoU, bf16 vs fp32 embeddings ({n} prompts: centre points and boxes): "
          f"mean {np.mean(ious):.4f}, min {min(ious):.4f}")
    if not args.amx_row_only:
        print(f"mask IoU, int8-linear vs fp32 embeddings ({n} prompts): "
              f"mean {np.mean(ious8):.4f}, min {min(ious8):.4f}")
    if amx:
        print(f"AMX row ({model.model_type}, {size} px, auto = {choice.label}): ours bf16 "
              f"{t['ours bf16 autocast']:.2f} s vs micro-sam precompute fp32 {base:.2f} s = "
              f"{bf16_ratio:.3f}x (target <= 0.35); mask IoU bf16 vs fp32 mean "
              f"{np.mean(ious):.4f}, min {min(ious):.4f} (target >= 0.99)")
    else:
        print("AMX row: N/A (no AMX)")
    amx_ratio = f"{bf16_ratio:.3f}" if amx else "N/A"
    print(f"RATIO embedding_compute={headline:.3f} embed_bf16_ours_over_microsam={amx_ratio}")


if __name__ == "__main__":
    main()
