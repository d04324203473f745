"""Train ``tiny_cells``: the offline default model shipped in the package.

``python scripts/make_tiny_checkpoint.py`` trains the tiny SAM architecture (about 0.4 M
parameters, 256 px input; ``core.models.TinyConfig``) from its seeded random initialisation,
all weights (FULL mode), in one process, on synthetic "round" fluorescence cells
(``core.dataset.synthetic``, seeded; 40 images plus 20 packed tighter, most cells touching; never
the built-in sample's images and never another style: the demo fine-tunes on the unseen "elongated"
style), with the training engine's own step (``SamStep``: micro-sam's recipe of a point or box
prompt plus correction rounds). It then picks the thresholds of micro-sam's mask generator
(automatic segmentation) that match the held-out cells best, prints the val point/box/corrected
mIoU before and after and writes ``src/napari_raysam/weights/tiny_cells.pt`` (about 2 MB) with
its lineage (this script, seed, styles, settings, metrics, the mask-generator thresholds, which
``core.segment.automatic`` uses). Same seed, same data. Took 31 minutes on 2 busy CPU cores
(25 of them training; val point mIoU 0.02 -> 0.92, box 0.02 -> 0.92 on held-out round cells).
``benchmarks/builtin_model.py`` measures it on the built-in sample.

Good for: trying the whole product offline (segment, export, fine-tune, evaluate), demos, tests,
and clicks on round, bright synthetic cells. Not good for: real microscopy. It has seen only one
kind of synthetic cell and is a few hundred times smaller than SAM: use ``vit_b_lm`` (micro-sam's
light-microscopy model) or your own fine-tune of it on real data.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "napari_raysam" / "weights" / "tiny_cells.pt"
STYLE = "round"


def dense_style():
    """The round style packed tighter: more cells per image, most of them touching."""
    from dataclasses import replace

    from napari_raysam.core.dataset.synthetic import STYLES

    return replace(STYLES[STYLE], name=f"{STYLE}-dense", area_per_cell=2400.0, packing=0.7)


def build_dataset(folder: Path, images: int, dense: int, seed: int) -> str:
    """``images`` round images and ``dense`` densely packed round ones (never the built-in
    sample's, never another style), 15 % held out."""
    import numpy as np

    from napari_raysam.core.dataset import SampleInput, write_dataset
    from napari_raysam.core.dataset.synthetic import SAMPLE_SEED, make_samples

    samples = (make_samples(images, style=STYLE, seed=seed)
               + make_samples(dense, style=dense_style(), seed=seed + 1))
    sample_seeds = set(np.random.SeedSequence(SAMPLE_SEED).generate_state(16).tolist())
    for s in (seed, seed + 1):  # the built-in sample stays unseen: a fair first impression
        assert not sample_seeds & set(np.random.SeedSequence(s).generate_state(
            max(images, dense)).tolist()), "training images overlap the built-in sample"
    write_dataset(folder, [SampleInput(s.image, s.labels, f"{STYLE}{i}")
                           for i, s in enumerate(samples)], seed=seed, val_fraction=0.15)
    return str(folder)


def _matched_f1(pred, truth) -> tuple[int, float]:
    """Objects found in ``pred`` and the F1 of matching them to ``truth`` at IoU > 0.5."""
    import numpy as np

    n_pred, n_true = int(pred.max()), int(truth.max())
    pair = np.bincount(truth.astype(np.int64).ravel() * (n_pred + 1) + pred.ravel(),
                       minlength=(n_true + 1) * (n_pred + 1)).reshape(n_true + 1, n_pred + 1)
    union = pair.sum(1, keepdims=True) + pair.sum(0, keepdims=True) - pair
    tp = int((pair[1:, 1:] / np.maximum(union[1:, 1:], 1) > 0.5).sum())
    return n_pred, 2 * tp / max(n_pred + n_true, 1)


def tune_automatic(sam, config, dataset: str) -> dict:
    """Mask-generator thresholds (micro-sam's AMG) that match true cells best on the val
    images: stored in the lineage and used by ``segment.automatic`` for this model."""
    import itertools
    import tempfile

    import numpy as np

    from napari_raysam.core.dataset.shards import load_shard
    from napari_raysam.core.sam.embeddings import EmbeddingCache
    from napari_raysam.core.sam.models import LoadedModel
    from napari_raysam.core.sam.segment import automatic_generator, drop_small_objects

    model = LoadedModel("tiny_cells", "tiny", sam.eval(), "cpu", tiny_config=config)
    with tempfile.TemporaryDirectory(prefix="tiny-cells-amg-") as tmp:
        cache = EmbeddingCache(tmp)
        generators = []
        for s in load_shard(dataset, "val"):
            gen = automatic_generator(model, s.rgb, cache.get_or_compute(model, s.rgb))
            generators.append((gen, s.labels))
        best = None
        for piou, stab, nms in itertools.product((0.5, 0.6, 0.7, 0.8),
                                                 (0.6, 0.75, 0.85), (0.7, 0.5, 0.4, 0.3)):
            kw = {"pred_iou_thresh": piou, "stability_score_thresh": stab, "box_nms_thresh": nms}
            found = f1 = 0.0
            for gen, truth in generators:
                pred = drop_small_objects(np.asarray(gen.generate(**kw)).astype(np.uint32), 10)
                n, f = _matched_f1(pred, truth)
                found, f1 = found + n, f1 + f / len(generators)
            true = sum(int(t.max()) for _, t in generators)
            if best is None or f1 > best[0]:
                best = (f1, kw, found / true)
    sam.train()
    print(f"automatic: {best[1]} on val: F1@0.5 {best[0]:.3f}, found/true {best[2]:.2f}",
          flush=True)
    return best[1] | {"val_f1": round(best[0], 4), "val_found_over_true": round(best[2], 4)}


def evaluate(sam, config, dataset: str, rounds: int) -> dict:
    from napari_raysam.core.sam.evaluate import evaluate_model
    from napari_raysam.core.sam.models import LoadedModel

    sam.eval()
    row = evaluate_model(LoadedModel("tiny_cells", "tiny", sam, "cpu", tiny_config=config),
                         dataset, split="val", rounds=rounds)
    sam.train()
    return {k: round(row[k], 4) for k in ("miou_point", "miou_box", "miou_corrected",
                                          "sa50_point")} | {"objects": row["objects"]}


def train(args) -> dict:
    import numpy as np
    import torch

    from napari_raysam.core.dataset.shards import load_shard
    from napari_raysam.core.sam import prompts
    from napari_raysam.core.sam.models import TinyConfig, build_tiny_sam, save_checkpoint
    from napari_raysam.core.sam.tiles import fixed_tiles, tile_arrays
    from napari_raysam.core.training.data import epoch_tiles
    from napari_raysam.core.training.step import SamStep

    torch.set_num_threads(args.threads)
    config = TinyConfig()
    sam = build_tiny_sam(config, seed=args.seed)
    size = config.img_size
    with tempfile.TemporaryDirectory(prefix="tiny-cells-") as tmp:
        dataset = build_dataset(Path(tmp) / "set", args.images, args.dense, args.seed)
        train_set = load_shard(dataset, "train")
        base = fixed_tiles(train_set, size, 10)
        before = evaluate(sam, config, dataset, args.rounds)
        print(f"before: {before}  ({len(train_set)} train images)", flush=True)
        step = SamStep(sam, frozen_encoder=False).train()
        opt = torch.optim.AdamW(sam.parameters(), lr=args.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps,
                                                    pct_start=0.05)
        gen = torch.Generator().manual_seed(args.seed)
        rng = np.random.default_rng(args.seed)
        t0, running = time.perf_counter(), []
        per_epoch = len(base) // args.batch
        for s in range(args.steps):
            epoch, k = divmod(s, per_epoch)
            if k == 0:
                tiles = epoch_tiles(train_set, base, size, per_epoch * args.batch, "full",
                                    args.seed, epoch, 0, 10)
            arrays = [tile_arrays(train_set, t, size)
                      for t in tiles[k * args.batch:(k + 1) * args.batch]]
            masks = [prompts.object_masks(lab, prompts.select_objects(lab, args.objects, rng))
                     for _, lab in arrays]
            x = torch.from_numpy(np.stack([rgb for rgb, _ in arrays]))
            use_masks = prompts.shared_unit(args.seed, "mask", s) < 0.5
            loss, _ = step(x, masks, prompts.first_prompt_kind(s), args.rounds, gen, 0.025,
                           use_masks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running.append(float(loss.detach()))
            if (s + 1) % args.log_every == 0:
                rate = (s + 1) / (time.perf_counter() - t0)
                print(f"step {s + 1}/{args.steps}  loss {np.mean(running):.3f}  "
                      f"{rate:.1f} steps/s  ETA {(args.steps - s - 1) / rate / 60:.1f} min",
                      flush=True)
                running = []
        after = evaluate(sam, config, dataset, args.rounds)
        minutes = (time.perf_counter() - t0) / 60
        auto = tune_automatic(sam, config, dataset)
    print(f"after:  {after}  (trained {minutes:.1f} min)", flush=True)
    lineage = {
        "name": "tiny_cells", "script": "scripts/make_tiny_checkpoint.py", "seed": args.seed,
        "style": STYLE, "styles": [STYLE, dense_style().name], "mode": "full",
        "init": f"tiny:{args.seed} (random)",
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "threads")},
        "metrics": {"before": before, "after": after, "split": "val"},
        "automatic": auto, "train_minutes": round(minutes, 1),
        "good_for": "mechanics, demos, tests, round synthetic cells",
        "not_for": "real microscopy: use vit_b_lm or a fine-tune of it",
    }
    save_checkpoint(args.out, sam, "tiny", config, lineage=lineage)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB)")
    return lineage


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--images", type=int, default=40, help="synthetic 256 px round images")
    p.add_argument("--dense", type=int, default=20,
                   help="extra round images packed tighter (touching cells)")
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    p.add_argument("--batch", type=int, default=2, help="images per step")
    p.add_argument("--objects", type=int, default=8, help="objects per image and step")
    p.add_argument("--rounds", type=int, default=1, help="correction rounds")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--log-every", type=int, default=50)
    train(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
