"""Percentile vs micro-sam's min-max scaling: the pixels each produces and how a model segments.

Conditions (8 seeded 256 px images each, ``core.dataset.synthetic``):

* ``round`` / ``elongated``: the synthetic cells as written (uint16 spanning most of the range);
  ``elongated`` is the fine-tuning benchmark's unseen style;
* ``camera``: the same round cells as a 16-bit camera records them (offset 100 counts, about
  1,500 counts of signal; no outliers);
* ``camera+hotN``: that, with N saturated hot pixels (65535) at random places per image;
  ``camera+hot5@4095``: 5 hot pixels at a 12-bit camera's saturation (4095).

Both scalings are affine-invariant, so ``camera`` (a rescaled ``round``) scores as ``round``
does: offset and gain alone change nothing; outliers do.

Pixels: cell-minus-background contrast of the uint8 SAM input (grey levels) and the number of
grey levels the image uses. Segmentation: ``core.sam.evaluate`` (one click at each cell's
centre-most pixel: point mIoU; its box: box mIoU) with ``--model`` (default ``tiny_cells``),
once with each scaling forced on it. ``tiny_cells`` was trained on percentile-scaled round
cells, so on clean images it starts with a home advantage under percentile.
Last line: ``RATIO point_miou_minmax_over_percentile=<camera+hot5> ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

N_IMAGES = 8
SIZE = 256


def camera(image_float: np.ndarray, rng: np.random.Generator, hot: int,
           saturation: int = 65535) -> np.ndarray:
    """A 16-bit camera frame: offset + signal in counts, ``hot`` pixels at ``saturation``."""
    counts = np.rint(100 + np.clip(image_float, 0, None) * 1200).astype(np.uint16)
    if hot:
        idx = rng.choice(counts.size, hot, replace=False)
        counts.flat[idx] = saturation
    return counts


def conditions(seed: int) -> dict[str, list]:
    """name -> [(image, labels)]."""
    from napari_raysam.core.dataset.synthetic import make_samples

    round_u16 = make_samples(N_IMAGES, (SIZE, SIZE), style="round", seed=seed)
    elongated = make_samples(N_IMAGES, (SIZE, SIZE), style="elongated", seed=seed + 1)
    floats = make_samples(N_IMAGES, (SIZE, SIZE), style="round", seed=seed, dtype=np.float32)
    out = {"round": [(s.image, s.labels) for s in round_u16],
           "elongated": [(s.image, s.labels) for s in elongated]}
    for hot in (0, 1, 5, 30):
        rng = np.random.default_rng([seed, hot])
        name = "camera" if hot == 0 else f"camera+hot{hot}"
        out[name] = [(camera(s.image, rng, hot), s.labels) for s in floats]
    rng = np.random.default_rng([seed, 4095])
    out["camera+hot5@4095"] = [(camera(s.image, rng, 5, 4095), s.labels) for s in floats]
    return out


def pixel_stats(pairs: list, policy) -> dict:
    """Mean cell-minus-background contrast (grey levels) and grey levels used, per image."""
    from napari_raysam.core.images import to_sam_rgb

    contrast, levels = [], []
    for image, labels in pairs:
        grey = to_sam_rgb(image, policy)[..., 0].astype(np.float64)
        contrast.append(grey[labels > 0].mean() - grey[labels == 0].mean())
        levels.append(len(np.unique(grey)))
    return {"contrast": float(np.mean(contrast)), "levels": float(np.mean(levels))}


def segment_scores(model, pairs: list, folder: Path) -> dict:
    """Object-weighted point/box mIoU over all images (both splits of a written set)."""
    from napari_raysam.core.dataset import SampleInput, write_dataset
    from napari_raysam.core.sam.evaluate import evaluate_model

    write_dataset(folder, [SampleInput(img, lab, f"i{i}") for i, (img, lab) in enumerate(pairs)],
                  val_fraction=0.5)
    rows = [evaluate_model(model, str(folder), split=split, rounds=0) for split in ("train", "val")]
    n = sum(r["objects"] for r in rows)
    return {"objects": n, **{k: sum(r[k] * r["objects"] for r in rows) / n
                             for k in ("miou_point", "miou_box")}}


def main() -> None:
    import torch

    from napari_raysam.core.images import LEGACY, ImagePolicy
    from napari_raysam.core.sam.models import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_cells", help="model spec (default tiny_cells)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = load_model(args.model, "cpu")
    policies = {"minmax": ImagePolicy(), "percentile": LEGACY}
    print(f"model {args.model} (trained with {model.normalisation}); {N_IMAGES} images of "
          f"{SIZE} px per condition; seed {args.seed}")
    print(f"{'condition':<19}{'scaling':<12}{'contrast':>9}{'levels':>8}{'point':>8}{'box':>8}"
          f"{'objects':>9}")
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="raysam-norm-") as tmp:
        for name, pairs in conditions(args.seed).items():
            for label, policy in policies.items():
                forced = dataclasses.replace(model, normalisation=policy.normalisation())
                px = pixel_stats(pairs, policy)
                seg = segment_scores(forced, pairs, Path(tmp) / f"{name}-{label}")
                results[name, label] = seg
                print(f"{name:<19}{label:<12}{px['contrast']:>9.1f}{px['levels']:>8.0f}"
                      f"{seg['miou_point']:>8.3f}{seg['miou_box']:>8.3f}{seg['objects']:>9}")
    print(f"({time.perf_counter() - start:.0f} s; contrast = mean grey level in cells minus "
          "background, of 255; levels = distinct grey levels used)")
    ratios = " ".join(
        f"point_{c.replace('+', '_').replace('@', '_')}={results[c, 'minmax']['miou_point'] / max(results[c, 'percentile']['miou_point'], 1e-9):.3f}"  # noqa: E501
        for c in ("round", "elongated", "camera+hot5", "camera+hot5@4095"))
    print(f"RATIO minmax_over_percentile {ratios}")


if __name__ == "__main__":
    main()
