"""Tiled embeddings vs micro-sam's: per-tile min-max scaling (ours now) and whole-image scaling
(ours before) against ``micro_sam.util.precompute_image_embeddings`` on the same image.

A 16-bit camera frame (offset 100 counts, ~1,200 counts of signal, seeded synthetic cells)
larger than twice the model's input, so it is embedded in tiles, once clean and once with a
bright region (a saturated corner) that squeezes the rest of the image into a few whole-image
grey levels. Model: ``tiny_cells``' weights in a checkpoint that records micro-sam's min-max
scaling (what a model trained here from a micro-sam base carries); 1 CPU thread; fp32.

Per condition: the max abs difference of each arm's tile features from micro-sam's, the share
of tile pixels that differ from micro-sam's ``_to_image`` of the tile, and the seconds each
arm takes (interleaved, median), so ``seconds_ours_over_microsam`` compares the same work.
Run: ``python benchmarks/tiled_parity.py [--smoke]``; last line ``RATIO ...``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, machine, table  # noqa: E402


def frames(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    from napari_raysam.core.dataset.synthetic import make_sample

    signal = make_sample(shape, seed=7, dtype=np.float32).image
    clean = np.rint(100 + np.clip(signal, 0, None) * 1200).astype(np.uint16)
    bright = clean.copy()
    bright[: shape[0] // 5, : shape[1] // 5] = 65535
    return {"camera": clean, "camera+saturated corner": bright}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a smaller image, 1 repeat")
    args = parser.parse_args()
    import torch
    from bioimage_cpp.utils import Blocking
    from micro_sam.util import _to_image, precompute_image_embeddings
    from segment_anything import SamPredictor

    from napari_raysam.core.images import ImagePolicy, to_sam_input
    from napari_raysam.core.sam.embeddings import EmbeddingCache, Tiling
    from napari_raysam.core.sam.models import load_model, save_checkpoint

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="raysam-tiled-"))
    shipped = load_model("tiny_cells", device="cpu")
    path = save_checkpoint(tmp / "minmax.pt", shipped.sam, "tiny", shipped.tiny_config,
                           normalisation=ImagePolicy().normalisation())
    model = load_model(str(path), device="cpu")
    predictor = SamPredictor(model.sam)
    predictor.model_type, predictor.model_name = "vit_t", "tiny"  # recorded in its signature
    shape = (600, 560) if args.smoke else (1100, 1300)
    repeats = 1 if args.smoke else 3
    print(f"machine: {machine()}; {shape[0]}x{shape[1]} uint16, tiny_cells weights "
          f"(min-max), 1 thread, fp32, median of {repeats}", flush=True)
    rows, ratios = [], {}
    for name, image in frames(shape).items():
        sam_input = to_sam_input(image, model.image_policy())
        tiling = Tiling.auto(image.shape, model.img_size)
        blocking = Blocking([0, 0], list(image.shape), list(tiling.tile_shape))
        n_tiles = blocking.number_of_blocks
        arms = {
            "ours (per tile)": lambda s=sam_input: EmbeddingCache(
                tempfile.mkdtemp(dir=tmp)).get_or_compute(model, s, precision="fp32"),
            "ours before (whole image)": lambda s=sam_input: EmbeddingCache(
                tempfile.mkdtemp(dir=tmp)).get_or_compute(model, s.rgb, precision="fp32"),
            "micro-sam": lambda im=image, t=tiling: precompute_image_embeddings(
                predictor, im, verbose=False, tile_shape=t.tile_shape, halo=t.halo),
        }
        seconds = interleaved(arms, repeats, warmup=0)
        out = {arm: fn() for arm, fn in arms.items()}
        ref = out["micro-sam"]["features"]
        for arm in ("ours (per tile)", "ours before (whole image)"):
            feats = out[arm]["features"]
            diff = max(float(np.abs(feats[str(t)][:] - ref[str(t)][:]).max())
                       for t in range(n_tiles))
            differing = total = 0
            for t in range(n_tiles):
                outer = blocking.get_block_with_halo(t, list(tiling.halo)).outer_block
                rows_, cols = (slice(outer.begin[0], outer.end[0]),
                               slice(outer.begin[1], outer.end[1]))
                tile = (sam_input.tile(rows_, cols) if arm.startswith("ours (")
                        else np.ascontiguousarray(sam_input.rgb[rows_, cols]))
                differing += int((tile != _to_image(image[rows_, cols])).any(-1).sum())
                total += tile.shape[0] * tile.shape[1]
            rows.append([name, arm, n_tiles, f"{diff:.2e}", f"{differing / total:.3f}",
                         round(seconds[arm], 2)])
        rows.append([name, "micro-sam", n_tiles, "0", "0", round(seconds["micro-sam"], 2)])
        key = name.replace("+", "_").replace(" ", "_")
        ratios[f"max_abs_diff_{key}"] = max(
            float(np.abs(out["ours (per tile)"]["features"][str(t)][:] - ref[str(t)][:]).max())
            for t in range(n_tiles))
        ratios[f"seconds_ours_over_microsam_{key}"] = (seconds["ours (per tile)"]
                                                       / seconds["micro-sam"])
    print(table(["image", "arm", "tiles", "max abs diff vs micro-sam",
                 "tile pixels differing", "seconds"], rows))
    print("RATIO " + " ".join(f"{k}={v:.3g}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
