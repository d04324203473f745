"""Training throughput (objects/s) of the same SAM step in different harnesses.

Rows: a plain single-process PyTorch loop (full and decoder mode), our Ray run with 1 and 2
workers (full and decoder), and micro-sam's own SamTrainer (torch-em) on the same tiny model,
data, objects per image and rounds. Ray rows report the training part of an epoch (the
``objects_per_s`` metric: validation and startup excluded); micro-sam's row is wall time of
``fit`` with one validation batch. Run: ``python benchmarks/training_throughput.py [--smoke]``.
The last line is ``RATIO name=value`` (Ray 2-worker full / plain full).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_raysam.core.dataset import SampleInput, write_dataset
from napari_raysam.core.images import to_sam_rgb
from napari_raysam.core.models import build_tiny_sam
from napari_raysam.core.sample_data import make_samples
from napari_raysam.core.training import prompts
from napari_raysam.core.training.data import dihedral
from napari_raysam.core.training.engine import SamStep, encode
from napari_raysam.core.training.trainable import setup_mode

N_OBJ, ROUNDS = 8, 3


def plain_loop(samples, mode: str, steps: int, sam=None, device: str = "cpu",
               bf16: bool = False) -> float:
    """Objects/s of the identical step in one process (1 CPU thread), embeddings cached in
    decoder mode like the Ray loop does. ``sam``: the model (tiny by default); ``bf16``: autocast
    as our training loop does on CUDA."""
    torch.set_num_threads(1)
    sam = (sam or build_tiny_sam(seed=0)).to(device)
    opt = torch.optim.AdamW(setup_mode(sam, mode), lr=1e-4)
    step = SamStep(sam, frozen_encoder=mode == "decoder")
    rng, gen, cache = np.random.default_rng(0), torch.Generator().manual_seed(0), {}
    data = [(to_sam_rgb(s.image), s.labels) for s in samples]
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)
    n_obj, t0 = 0, time.perf_counter()
    for it in range(steps):
        i, v = it % len(data), int(rng.integers(8))
        rgb, lab = dihedral(data[i][0], v), dihedral(data[i][1], v)
        masks = prompts.object_masks(lab, prompts.select_objects(lab, N_OBJ, rng, 10))
        x = torch.from_numpy(rgb)[None]
        with autocast:
            if mode == "decoder":
                if (i, v) not in cache:
                    with torch.no_grad():
                        cache[(i, v)] = encode(sam, x)
                x = cache[(i, v)]
            loss, n = step(x, [masks], prompts.first_prompt_kind(it), ROUNDS, gen, 0.025,
                           prompts.shared_unit(0, it) < 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n_obj += n
    if device == "cuda":
        torch.cuda.synchronize()
    return n_obj / (time.perf_counter() - t0)


def ray_run(dataset: Path, storage: Path, mode: str, workers: int, steps: int) -> float:
    from napari_raysam.core.training.config import TrainConfig
    from napari_raysam.core.training.runner import run_training

    cfg = TrainConfig(dataset=str(dataset), mode=mode, workers=workers, epochs=2,
                      steps_per_epoch=steps, objects_per_image=N_OBJ, correction_rounds=ROUNDS,
                      eval_objects=4, storage=str(storage))
    out = run_training(cfg, log_to_driver=False)
    return float(out.history[-1]["objects_per_s"])  # epoch 2: embedding cache warm


def microsam_trainer(samples, steps: int, root: Path, sam=None, device: str = "cpu",
                     mixed_precision: bool = False) -> float:
    """micro-sam's SamTrainer (torch-em) on the same model (tiny by default), objects and
    rounds; ``mixed_precision`` is torch-em's own (fp16 autocast + grad scaling)."""
    from micro_sam.training import SamTrainer
    from micro_sam.training.trainable_sam import TrainableSAM
    from micro_sam.training.util import ConvertToSamInputs

    torch.set_num_threads(1)
    xs = torch.stack([torch.from_numpy(to_sam_rgb(s.image)).permute(2, 0, 1).float()
                      for s in samples])
    ys = torch.stack([torch.from_numpy(s.labels.astype(np.float32))[None] for s in samples])
    ds = torch.utils.data.TensorDataset(xs, ys)
    train_loader = torch.utils.data.DataLoader(ds, batch_size=1, shuffle=True)
    val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, [0]), batch_size=1)
    train_loader.shuffle = True  # torch-em reads these attributes
    val_loader.shuffle = False
    model = TrainableSAM((sam or build_tiny_sam(seed=0)).to(device))
    trainer = SamTrainer(
        name="bench", save_root=str(root), train_loader=train_loader, val_loader=val_loader,
        model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-4), device=device,
        lr_scheduler=None, logger=None, log_image_interval=10**9, mixed_precision=mixed_precision,
        convert_inputs=ConvertToSamInputs(transform=model.transform, box_distortion_factor=0.025),
        n_objects_per_batch=N_OBJ, n_sub_iteration=ROUNDS + 1, compile_model=False,
    )
    t0 = time.perf_counter()
    trainer.fit(iterations=steps)
    return steps * N_OBJ / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="few steps, for CI")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    steps = args.steps or (6 if args.smoke else 40)
    samples = make_samples(8, seed=1)
    rows: dict[str, float] = {}
    rows["plain full"] = plain_loop(samples, "full", steps)
    rows["plain decoder"] = plain_loop(samples, "decoder", steps)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_dataset(tmp / "ds", [SampleInput(s.image, s.labels, f"s{i}")
                                   for i, s in enumerate(samples)], val_fraction=0.25)
        try:
            rows["micro-sam SamTrainer full"] = microsam_trainer(samples, steps, tmp / "ms")
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"micro-sam trainer skipped: {type(exc).__name__}: {exc}")
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for mode in ("full", "decoder"):
                for workers in (1, 2):
                    rows[f"ray {workers}w {mode}"] = ray_run(tmp / "ds", tmp / "runs", mode,
                                                            workers, steps)
        finally:
            ray.shutdown()
    print(f"\n{'harness':<28} objects/s   (tiny SAM, {N_OBJ} objects x {ROUNDS + 1} rounds, "
          f"{steps} steps)")
    for name, value in rows.items():
        print(f"{name:<28} {value:9.1f}")
    print(f"RATIO ray2w_full_over_plain_full={rows['ray 2w full'] / rows['plain full']:.2f}")


if __name__ == "__main__":
    main()
