"""Fine-tuning quality: our Ray trainer vs micro-sam's own ``train_sam``, same data, model, time.

Data: synthetic ``elongated`` cells (thin, touching, dim: unlike the round cells ``tiny_cells``
was trained on), written with our ``write_dataset``: a training set (train + val split) and a
separate held-out test set from another seed. Base model: the shipped ``tiny_cells``.

Trainers (1 CPU thread each):
* ours: ``core.training.runner.run_training`` on a local Ray cluster (the job path every run
  takes), mode ``full`` with 1 and 2 workers (``--modes full,decoder,lora`` adds 1-worker
  ``decoder`` and ``lora`` rows; ``--lr-scaling linear,sqrt`` adds 2-worker ``full`` rows whose
  lr grows with the workers, ``TrainConfig.lr_scaling``). Ours trains on micro-sam's min-max
  pixels (``TrainConfig.normalisation``), the pixels micro-sam's trainer sees and micro-sam's
  evaluator feeds every model; ``--ours-normalisation base`` keeps tiny_cells' percentile
  scaling instead (then micro-sam's evaluator grades ours on pixels it was not trained on).
  Ours trains a number of epochs (``--epochs``, by default sized from ``--budget``); its wall
  time T1 (1 worker, full) is the budget micro-sam then gets, so the two have equal wall time.
* micro-sam: ``micro_sam.training.train_sam`` itself (SamTrainer, its Dice + IoU-MSE loss,
  prompt sampling, ReduceLROnPlateau, best.pt by its val metric, ``default_sam_loader`` on the
  set's TIFFs with its ``normalize_minmax`` transform). Adapter (no change to the maths): its
  ``get_trainable_sam_model`` is patched to return ``TrainableSAM(tiny_cells)`` (micro-sam's
  registry cannot build our tiny architecture), and its ``SamTrainer`` is subclassed to snapshot
  the model after each epoch and to stop at the first epoch end past T1. Hyper-parameters match
  ours (lr 1e-4, 8 objects, 1 + 3 prompt rounds) and precision is fp32 like ours on CPU;
  ``--microsam-defaults`` uses train_sam's own (lr 1e-5, 25 objects, 8 rounds, bf16 on CPU).
  micro-sam's model at equal time is the best.pt it had written by T1. For grading, micro-sam's
  ``batched_inference`` gets the encoder's own prompt scaling (see :func:`grade_microsam`).

Every returned model is graded on the held-out test set by both evaluators: ours
(``core.sam.evaluate``: mIoU from a centre point, a box, and after 3 correction rounds) and
micro-sam's (``micro_sam.evaluation.inference.run_inference_with_prompts``, box and 1-point
prompts, then ``evaluation.run_evaluation``: mSA / SA50). Per epoch, both runs' val box mIoU is
measured by the same function (our training loop's ``validate``) with its time since the run
started, which gives the time each needs to reach micro-sam's final val score.

Run: ``python benchmarks/finetune_quality.py [--budget 120] [--modes full,decoder,lora]``
(``--smoke``: 2 epochs).
The last line is ``RATIO quality_box_ours_over_microsam=... ...``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _harness import isolate  # noqa: E402
from _timing import machine, table  # noqa: E402

BASE = "tiny_cells"
STYLE = "elongated"
N_TRAIN, N_VAL, N_TEST = 16, 4, 8
MATCHED = {"lr": 1e-4, "objects": 8, "rounds": 3}  # ours' defaults
MICROSAM_DEFAULTS = {"lr": 1e-5, "objects": 25, "rounds": 7}  # train_sam: n_sub_iteration 8
EPOCH_GUESS_S, OVERHEAD_GUESS_S = 20.0, 60.0  # sizes ours' epochs from --budget (2 shared cores)


def write_sets(root: Path, seed: int) -> tuple[Path, Path]:
    """(training set with a val split, held-out test set): same generator, different seeds."""
    from napari_raysam.core.dataset import SampleInput, write_dataset
    from napari_raysam.core.dataset.synthetic import make_samples

    def write(dest: Path, samples, val_fraction: float) -> Path:
        write_dataset(dest, [SampleInput(s.image, s.labels, f"{dest.name}{i}")
                             for i, s in enumerate(samples)], val_fraction=val_fraction)
        return dest

    train = make_samples(N_TRAIN + N_VAL, style=STYLE, seed=seed)
    test = make_samples(N_TEST, style=STYLE, seed=seed + 1)
    return (write(root / "train", train, N_VAL / (N_TRAIN + N_VAL)),
            write(root / "test", test, 0.5))  # both splits of the test set are graded


def split_files(dataset: Path, splits: tuple[str, ...]) -> tuple[list[str], list[str]]:
    from napari_raysam.core.dataset import open_dataset

    ts = open_dataset(dataset)
    records = sorted((r for s in splits for r in ts.split(s)), key=lambda r: r.id)
    return [str(dataset / r.image) for r in records], [str(dataset / r.labels) for r in records]


# --- ours --------------------------------------------------------------------------------------

def train_ours(dataset: Path, storage: Path, mode: str, workers: int, epochs: int,
               hyper: dict, lr_scaling: str = "none", normalisation: str | None = None) -> dict:
    """One run through run_training; per-epoch val box mIoU with seconds since the call."""
    from napari_raysam.core.storage import local_path
    from napari_raysam.core.training.config import TrainConfig
    from napari_raysam.core.training.runner import run_training

    cfg = TrainConfig(dataset=str(dataset), model=BASE, mode=mode, workers=workers,
                      epochs=epochs, lr=hyper["lr"], objects_per_image=hyper["objects"],
                      correction_rounds=hyper["rounds"], storage=str(storage), max_failures=0,
                      lr_scaling=lr_scaling, normalisation=normalisation)
    t0 = time.time_ns()
    out = run_training(cfg, log_to_driver=False)
    wall = (time.time_ns() - t0) / 1e9
    # event objects are named <time ns>-epoch-<epoch>.json (core.training.events)
    stamps = {int(p.stem.split("-")[-1]): (int(p.stem.split("-")[0]) - t0) / 1e9
              for p in (Path(local_path(out.run_dir)) / "events").glob("*-epoch-*.json")}
    curve = [(stamps[h["epoch"]], h["val_miou_box"]) for h in out.history]
    return {"checkpoint": local_path(out.checkpoint), "wall": wall, "curve": curve,
            "epochs": len(out.history), "best_epoch": out.best_epoch}


# --- micro-sam ---------------------------------------------------------------------------------

def train_microsam(train_set: Path, root: Path, budget_s: float, hyper: dict, bf16: bool) -> dict:
    """micro-sam's train_sam on tiny_cells until the first epoch end past ``budget_s``."""
    import micro_sam.training.training as ms_training
    import torch
    from micro_sam.training import default_sam_loader, sam_trainer
    from micro_sam.training.trainable_sam import TrainableSAM
    from micro_sam.training.util import get_raw_transform

    from napari_raysam.core.sam.models import load_model

    loaded = load_model(BASE, device="cpu")
    size = loaded.img_size
    model = TrainableSAM(loaded.sam)
    snaps: list[dict] = []
    clock = {"t0": 0.0}

    class TimedSamTrainer(sam_trainer.SamTrainer):
        """micro-sam's SamTrainer, plus a snapshot per epoch and a stop at the budget."""

        def __init__(self, **kwargs):
            kwargs["mixed_precision"] = bf16 and kwargs.get("mixed_precision", True)
            super().__init__(**kwargs)

        def save_checkpoint(self, name, current_metric, best_metric, *args, **kwargs):
            super().save_checkpoint(name, current_metric, best_metric, *args, **kwargs)
            if name != "latest":
                return
            now = time.perf_counter() - clock["t0"]
            snaps.append({"t": now, "epoch": self._epoch + 1, "metric": float(current_metric),
                          "best": self._best_epoch == self._epoch,
                          "state": {k: v.detach().clone()
                                    for k, v in self.model.sam.state_dict().items()}})
            if now >= budget_s:
                self.early_stopping = -1  # torch-em's own stop test then ends the fit

    def loader(split: str, train: bool):
        images, labels = split_files(train_set, (split,))
        return default_sam_loader(
            raw_paths=images, raw_key=None, label_paths=labels, label_key=None,
            patch_shape=(size, size), with_segmentation_decoder=False, is_train=train,
            raw_transform=get_raw_transform("normalize_minmax"), n_samples=len(images),
            batch_size=1, shuffle=train, num_workers=0)

    torch.set_num_threads(1)  # as one Ray worker with cpus_per_worker=1
    with mock.patch.object(ms_training, "get_trainable_sam_model",
                           lambda **kw: (model.to(kw.get("device", "cpu")), {})), \
            mock.patch.object(sam_trainer, "SamTrainer", TimedSamTrainer):
        clock["t0"] = time.perf_counter()
        ms_training.train_sam(
            name="microsam", model_type="vit_b", train_loader=loader("train", True),
            val_loader=loader("val", False), n_epochs=100_000, with_segmentation_decoder=False,
            device="cpu", save_root=str(root), lr=hyper["lr"],
            n_objects_per_batch=hyper["objects"], n_sub_iteration=hyper["rounds"] + 1)
        wall = time.perf_counter() - clock["t0"]
    return {"snaps": snaps, "wall": wall, "loaded": loaded}


def best_as_of(snaps: list[dict], t: float) -> dict:
    """The snapshot micro-sam's best.pt held at time ``t`` (its first epoch if none ended)."""
    done = [s for s in snaps if s["best"] and s["t"] <= t + 1e-9]
    return done[-1] if done else snaps[0]


def save_snapshot(snap: dict, loaded, path: Path) -> str:
    from napari_raysam.core.sam.models import save_checkpoint

    loaded.sam.load_state_dict(snap["state"])
    save_checkpoint(path, loaded.sam, loaded.model_type, tiny_config=loaded.tiny_config)
    return str(path)


def val_box(checkpoint: str, train_set: Path, hyper: dict) -> float:
    """Val box mIoU by our training loop's own ``validate`` (what ours logs every epoch)."""
    from napari_raysam.core.dataset.shards import load_shard
    from napari_raysam.core.sam.models import load_model
    from napari_raysam.core.training.config import TrainConfig
    from napari_raysam.core.training.loop import validate

    loaded = load_model(checkpoint, device="cpu")
    cfg = TrainConfig(dataset=str(train_set), correction_rounds=hyper["rounds"])
    val = load_shard(str(train_set), "val", normalisation=loaded.normalisation)
    return validate(loaded.sam, val, loaded.img_size, cfg, None)["val_miou_box"]


# --- grading on the held-out test set ----------------------------------------------------------

def grade_ours(checkpoint: str, test_set: Path) -> dict:
    """core.sam.evaluate on every test image (both splits of the test set), object-weighted."""
    from napari_raysam.core.sam.evaluate import METRICS, evaluate_model
    from napari_raysam.core.sam.models import load_model

    loaded = load_model(checkpoint, device="cpu")
    rows = [evaluate_model(loaded, str(test_set), split=s) for s in ("train", "val")]
    n = sum(r["objects"] for r in rows)
    return {m: sum(r[m] * r["objects"] for r in rows) / n for m in METRICS} | {"objects": n}


def grade_microsam(checkpoint: str, test_set: Path, work: Path) -> dict:
    """micro-sam's prompt inference (box; 1 positive point) + its mSA/SA50 on the test set.

    Adapter: micro-sam's ``batched_inference`` scales prompts with a hard-coded
    ``ResizeLongestSide(1024)``; for our 256 px encoder it is given the encoder's own size
    (for a 1024 px SAM this is the same transform). Point prompts are sampled with
    ``np.random``: seeded equally for every model, so all models see the same prompts.
    """
    import micro_sam.inference as ms_inference
    import numpy as np
    from micro_sam.evaluation.evaluation import run_evaluation
    from micro_sam.evaluation.inference import run_inference_with_prompts
    from segment_anything import SamPredictor
    from segment_anything.utils.transforms import ResizeLongestSide

    from napari_raysam.core.sam.models import load_model

    loaded = load_model(checkpoint, device="cpu")
    predictor = SamPredictor(loaded.sam.eval())
    predictor.model_type = predictor.model_name = loaded.model_type  # what micro-sam sets
    images, labels = split_files(test_set, ("train", "val"))
    out = {}
    with mock.patch.object(ms_inference, "ResizeLongestSide",
                           lambda _size: ResizeLongestSide(loaded.img_size)):
        for kind, kw in (("box", {"use_points": False, "use_boxes": True, "n_positives": 0}),
                         ("point", {"use_points": True, "use_boxes": False, "n_positives": 1})):
            pred = work / kind
            np.random.seed(0)
            run_inference_with_prompts(predictor, images, labels,
                                       embedding_dir=str(work / "emb"),
                                       prediction_dir=str(pred), n_negatives=0, **kw)
            df = run_evaluation(labels, [str(pred / Path(p).name) for p in images],
                                verbose=False)
            out[f"msa_{kind}"], out[f"sa50_{kind}"] = float(df["mSA"][0]), float(df["SA50"][0])
    return out


# --- report ------------------------------------------------------------------------------------

def root_error(exc: BaseException) -> str:
    """The innermost ``SomeError: message`` line of an exception and its causes (a worker's
    error arrives wrapped in Ray's and the runner's)."""
    text = "\n".join(str(e) for e in (exc, exc.__cause__) if e is not None)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    hits = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return (hits[-1] if hits else f"{type(exc).__name__}: {lines[0] if lines else ''}")[:200]


def time_to_reach(curve: list[tuple[float, float]], score: float) -> float | None:
    return next((t for t, s in curve if s >= score - 1e-9), None)


def fmt_s(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=120.0,
                        help="target wall seconds of ours' 1-worker full run (sizes its epochs); "
                             "micro-sam is compared at what that run took (default: "
                             "%(default)s)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="ours' epochs (default: sized from --budget)")
    parser.add_argument("--modes", default="full",
                        help="ours' modes; full also runs with 2 workers (default: %(default)s)")
    parser.add_argument("--lr-scaling", default="",
                        help="also 2-worker full runs with these lr scalings, e.g. linear,sqrt "
                             "(default: none)")
    parser.add_argument("--microsam-defaults", action="store_true",
                        help="micro-sam with train_sam's own lr/objects/rounds and bf16 on CPU")
    parser.add_argument("--ours-normalisation", default="minmax", choices=("minmax", "base"),
                        help="pixels ours trains on: minmax, micro-sam's (its trainer's "
                             "normalize_minmax and what its evaluator feeds every model), or "
                             "base, the base model's own (tiny_cells: percentile) (default: "
                             "%(default)s)")
    parser.add_argument("--seed", type=int, default=16, help="data seed (test set: seed + 1)")
    parser.add_argument("--smoke", action="store_true", help="2 epochs (run_all.py --smoke)")
    args = parser.parse_args()
    if args.smoke:
        args.epochs = args.epochs or 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    scalings = [x.strip() for x in args.lr_scaling.split(",") if x.strip()]
    if not set(scalings) <= {"sqrt", "linear"} or len(set(scalings)) < len(scalings):
        parser.error("--lr-scaling takes sqrt and/or linear, each once (none is the 2w row)")
    if "full" not in modes:
        parser.error("--modes must include full (the equal-time comparison is on full)")
    epochs = args.epochs or max(2, math.floor((args.budget - OVERHEAD_GUESS_S) / EPOCH_GUESS_S))
    ms_hyper = MICROSAM_DEFAULTS if args.microsam_defaults else MATCHED
    normalisation = None if args.ours_normalisation == "base" else args.ours_normalisation
    started = time.perf_counter()
    root = isolate("raysam-quality-")
    import ray
    import torch

    torch.set_num_threads(1)  # this process: micro-sam's trainer and the graders, as 1 worker

    train_set, test_set = write_sets(root, args.seed)
    print(f"machine: {machine()}\ndata: {N_TRAIN} train + {N_VAL} val '{STYLE}' images "
          f"(seed {args.seed}), {N_TEST} held-out test images (seed {args.seed + 1}), 256 px; "
          f"base {BASE}; ours {epochs} epochs on {args.ours_normalisation} pixels; "
          f"micro-sam {ms_hyper}"
          f"{', bf16' if args.microsam_defaults else ', fp32'}", flush=True)
    runs: dict[str, dict] = {}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        arms = [("full", 1, "none"), ("full", 2, "none")]
        arms += [("full", 2, x) for x in scalings] + [(m, 1, "none") for m in modes if m != "full"]
        for mode, workers, scaling in arms:
            name = f"ours {mode} {workers}w" + ("" if scaling == "none" else f" lr-{scaling}")
            print(f"training: {name}", flush=True)
            try:
                runs[name] = train_ours(train_set, root / "runs", mode, workers, epochs, MATCHED,
                                        scaling, normalisation)
            except Exception as exc:  # noqa: BLE001 - a failing mode is a row, not the end
                runs[name] = {"error": root_error(exc)}
                print(f"{name} failed: {runs[name]['error']}", flush=True)
    finally:
        ray.shutdown()
    if "error" in runs["ours full 1w"]:
        sys.exit(f"ours full 1w failed: {runs['ours full 1w']['error']}")
    t1 = runs["ours full 1w"]["wall"]
    print(f"training: micro-sam train_sam, budget {t1:.1f} s (ours full 1w's wall time)",
          flush=True)
    ms = train_microsam(train_set, root / "microsam", t1, ms_hyper, args.microsam_defaults)
    for snap in ms["snaps"]:  # per-epoch val box by the same function as ours' curve
        snap["path"] = save_snapshot(snap, ms["loaded"], root / f"ms-epoch{snap['epoch']}.pt")
        snap["val_box"] = val_box(snap["path"], train_set, MATCHED)
    final, at_t1 = best_as_of(ms["snaps"], math.inf), best_as_of(ms["snaps"], t1)
    runs["micro-sam at T1"] = {"checkpoint": at_t1["path"], "wall": min(t1, ms["wall"]),
                               "epochs": sum(s["t"] <= t1 for s in ms["snaps"]),
                               "best_epoch": at_t1["epoch"]}
    if final is not at_t1:
        runs["micro-sam final"] = {"checkpoint": final["path"], "wall": ms["wall"],
                                   "epochs": len(ms["snaps"]), "best_epoch": final["epoch"]}
    runs = {"base tiny_cells": {"checkpoint": BASE, "wall": 0.0, "epochs": 0,
                                "best_epoch": None}} | runs

    print("grading on the held-out test set", flush=True)
    rows = []
    for i, (name, run) in enumerate(runs.items()):
        if "error" in run:
            rows.append([name, "-", "-", "-", "failed (see above)", "", "", "", "", ""])
            continue
        ours = run["ours_eval"] = grade_ours(run["checkpoint"], test_set)
        theirs = run["ms_eval"] = grade_microsam(run["checkpoint"], test_set, root / f"eval{i}")
        rows.append([name, f"{run['wall']:.1f}", run["epochs"], run["best_epoch"],
                     ours["miou_point"], ours["miou_box"], ours["miou_corrected"],
                     theirs["msa_box"], theirs["sa50_box"], theirs["msa_point"]])
    print(f"\nheld-out test set: {N_TEST} images, "
          f"{runs['base tiny_cells']['ours_eval']['objects']} objects")
    print(table(["model", "train s", "epochs", "best epoch", "ours point", "ours box",
                 "ours corrected", "micro-sam mSA box", "SA50 box", "mSA point"], rows))

    target = final["val_box"]
    print(f"\nval box mIoU per epoch (our loop's validate), seconds since the run started; "
          f"micro-sam's final model (epoch {final['epoch']}) scores {target:.3f} at "
          f"{final['t']:.1f} s")
    curves = {"micro-sam": [(s["t"], s["val_box"]) for s in ms["snaps"]]}
    curves |= {n: r["curve"] for n, r in runs.items() if "curve" in r}
    for name, curve in curves.items():
        print(f"  {name:<22} " + " ".join(f"{t:.0f}s:{v:.3f}" for t, v in curve))
    reach = {n: time_to_reach(c, target) for n, c in curves.items()}  # micro-sam: its own
    print("time to reach micro-sam's final val box score: "
          + ", ".join(f"{n} {fmt_s(t)}" for n, t in reach.items()))

    def ratio(a: float | None, b: float | None) -> str:
        return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}"

    ours1, ms1 = runs["ours full 1w"], runs["micro-sam at T1"]
    print(f"benchmark wall time: {time.perf_counter() - started:.0f} s")
    print("RATIO " + " ".join([
        f"quality_box_ours_over_microsam="
        f"{ratio(ours1['ours_eval']['miou_box'], ms1['ours_eval']['miou_box'])}",
        f"quality_msa_box_ours_over_microsam="
        f"{ratio(ours1['ms_eval']['msa_box'], ms1['ms_eval']['msa_box'])}",
        f"time_to_microsam_final_2w_over_microsam="
        f"{ratio(reach.get('ours full 2w'), reach['micro-sam'])}",
        f"time_to_microsam_final_1w_over_microsam="
        f"{ratio(reach.get('ours full 1w'), reach['micro-sam'])}",
    ] + [f"time_to_microsam_final_2w_lr_{n.rsplit('-', 1)[1]}_over_microsam="
         f"{ratio(t, reach['micro-sam'])}" for n, t in reach.items() if " lr-" in n]))


if __name__ == "__main__":
    main()
