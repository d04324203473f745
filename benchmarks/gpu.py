"""GPU figures, prepared for a lent GPU machine (one run, well under 8 minutes).

- vit_b embedding throughput (images/s, 1024 px), fp32 vs bf16 autocast, ours (``encode``) vs
  micro-sam's ``precompute_image_embeddings``;
- prompt -> mask latency, our Segment path vs micro-sam's ``segment_from_points/_box``, and the
  fast decoder under bf16 autocast (with mask IoU vs fp32);
- fine-tuning objects/s, full and decoder mode, fp32 vs bf16 autocast: our training step (the
  ``SamStep`` a Ray worker runs, here in-process: Ray 1 worker / plain measured 1.03 on CPU) vs
  micro-sam's ``SamTrainer`` (fp32 and its own mixed precision), same model, data, objects and
  rounds (``training_throughput.py``'s harness).

Random weights (the cost does not depend on them). ``--smoke`` runs the same code on CPU with the
tiny model. Prints its table last and writes ``gpu_results.md`` + ``gpu_results.json`` under
``$OUT`` when set. Last line: ``RATIO gpu_prompt_latency=<ours/micro-sam, point>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, machine, table  # noqa: E402
from napari_raysam.core.dataset.synthetic import make_sample  # noqa: E402
from napari_raysam.core.images import to_sam_rgb  # noqa: E402
from napari_raysam.core.sam import segment  # noqa: E402
from napari_raysam.core.sam.embeddings import encode  # noqa: E402
from napari_raysam.core.sam.fast_decoder import fast_decoder_for  # noqa: E402
from napari_raysam.core.sam.models import (
    LoadedModel,
    build_standard_sam,
    build_tiny_sam,
    load_model,
)


def synced(fn, device: str):
    def call():
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return out
    return call


def training_rows(smoke: bool, device: str, results: dict) -> list[list]:
    """Objects/s of fine-tuning steps: ours (fp32, bf16) vs micro-sam's trainer."""
    import tempfile

    from napari_raysam.core.dataset.synthetic import make_samples
    from training_throughput import microsam_trainer, plain_loop

    steps = 4 if smoke else 20
    samples = make_samples(4, shape=(256, 256) if smoke else (512, 512), seed=1)

    def model():
        if smoke:
            return build_tiny_sam(seed=0)
        torch.manual_seed(0)
        return build_standard_sam("vit_b")

    speeds, threads = {}, torch.get_num_threads()  # the harness runs on one CPU thread
    for mode in ("full", "decoder"):
        for bf16 in (False, True):
            speeds[f"ours {mode} {'bf16' if bf16 else 'fp32'}"] = plain_loop(
                samples, mode, steps, model(), device, bf16)
    with tempfile.TemporaryDirectory() as tmp:
        for mixed in (False, True):
            name = f"micro-sam trainer full {'mixed' if mixed else 'fp32'}"
            try:
                speeds[name] = microsam_trainer(samples, steps, Path(tmp) / name, model(),
                                                device, mixed)
            except Exception as exc:  # noqa: BLE001 - report and go on
                print(f"{name} skipped: {type(exc).__name__}: {exc}")
    torch.set_num_threads(threads)
    results["training_objects_per_s"] = speeds
    base = speeds.get("micro-sam trainer full fp32")
    return [["fine-tuning", name, float("nan"), value, value / base if base else float("nan")]
            for name, value in speeds.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model")
    args = parser.parse_args()
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    if args.smoke:
        model, size, enc_reps, dec_reps = load_model("tiny", device="cpu"), 256, 3, 5
    else:
        torch.manual_seed(0)
        sam = build_standard_sam("vit_b").to(device).eval()
        model, size, enc_reps, dec_reps = LoadedModel("vit_b", "vit_b", sam, device), 1024, 10, 30
    predictor = model.predictor
    predictor.model_type = predictor.model_name = model.model_type
    rgb = to_sam_rgb(make_sample((size, size), seed=0).image)
    rows, results = [], {}

    from micro_sam.util import precompute_image_embeddings

    enc = interleaved({
        "micro-sam precompute fp32": synced(lambda: precompute_image_embeddings(
            predictor, rgb, ndim=2, verbose=False), device),
        "ours encode fp32": synced(lambda: encode(model, rgb, "fp32"), device),
        "ours encode bf16": synced(lambda: encode(model, rgb, "bf16"), device),
    }, repeats=enc_reps, warmup=1)
    base = enc["micro-sam precompute fp32"]
    for name, sec in enc.items():
        rows.append(["embedding", name, sec * 1e3, 1.0 / sec, sec / base])
    results["embedding_s"] = enc

    features, input_size, original_size = encode(model, rgb, "fp32")
    emb = {"features": features, "input_size": input_size, "original_size": original_size}
    from micro_sam import prompt_based_segmentation as pbs

    h, w = original_size
    point, labels = np.array([[h * 0.45, w * 0.4]]), np.array([1])
    box = np.array([h * 0.3, w * 0.3, h * 0.6, w * 0.55])
    decoder = fast_decoder_for(model.sam)

    def bf16_point():
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            return decoder.predict(features, input_size, original_size, point[:, ::-1], labels,
                                   multimask=True, best_only=True)[0][0]

    dec = interleaved({
        "micro-sam point": synced(lambda: pbs.segment_from_points(
            predictor, point, labels, image_embeddings=emb), device),
        "ours point": synced(lambda: segment.segment(model, emb, point, labels), device),
        "ours point, bf16 autocast": synced(bf16_point, device),
        "micro-sam box": synced(lambda: pbs.segment_from_box(
            predictor, box, image_embeddings=emb), device),
        "ours box": synced(lambda: segment.segment(model, emb, box=box), device),
    }, repeats=dec_reps, warmup=3)
    for name, sec in dec.items():
        ref = dec["micro-sam box" if "box" in name else "micro-sam point"]
        rows.append(["prompt->mask", name, sec * 1e3, 1.0 / sec, sec / ref])
    results["prompt_s"] = dec
    fp32_mask = segment.segment(model, emb, point, labels)
    bf16_mask = bf16_point()
    iou = float((fp32_mask & bf16_mask).sum() / max((fp32_mask | bf16_mask).sum(), 1))
    results["bf16_vs_fp32_point_mask_iou"] = iou

    rows += training_rows(args.smoke, device, results)

    info = f"{machine()}; device {device}"
    if device == "cuda":
        info += f" ({torch.cuda.get_device_name()})"
    text = "\n".join([
        f"machine: {info}; {model.model_type} {size} px; medians of {enc_reps} (embedding) and "
        f"{dec_reps} (prompt) interleaved repeats",
        table(["figure", "variant", "ms", "per s (images, masks or objects)",
               "ratio vs micro-sam (time; fine-tuning: speed)"], rows),
        f"point mask IoU, bf16 autocast vs fp32 decoder: {iou:.4f}",
        f"RATIO gpu_prompt_latency={dec['ours point'] / dec['micro-sam point']:.3f}",
    ])
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_results.md").write_text(text + "\n")
        (Path(out) / "gpu_results.json").write_text(json.dumps(
            {"machine": info, "smoke": args.smoke, **results}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
