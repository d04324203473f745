"""Training throughput (objects/s) of the same SAM step in different harnesses.

Rows, per model: a plain single-process PyTorch loop (full and decoder mode), our Ray run
(full and decoder; 1 and 2 workers for tiny, 1 worker for vit_t) and micro-sam's own SamTrainer
(torch-em) on the same model, data, objects per image and rounds. tiny: the test SAM, 40 steps;
vit_t: MobileSAM's architecture (our TinyViT, random weights) at 1024 px, ``--vit-t-steps``
(4; 0 skips it). The plain loop and micro-sam's trainer each run in a fresh process. Ray rows
report the training part of an epoch (the ``objects_per_s`` metric:
validation and startup excluded); micro-sam's row is wall time of ``fit`` with one validation
batch. Run: ``python benchmarks/training_throughput.py [--smoke]`` (tiny only, 6 steps). The
last line is ``RATIO name=value ...`` (Ray 2-worker full / plain full on tiny, and the vit_t
Ray 1-worker / plain and ours / micro-sam ratios).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_raysam.core.dataset import SampleInput, write_dataset
from napari_raysam.core.dataset.synthetic import make_samples
from napari_raysam.core.images import to_sam_rgb
from napari_raysam.core.sam import prompts
from napari_raysam.core.sam.engine import encode_tiles
from napari_raysam.core.sam.models import build_tiny_sam
from napari_raysam.core.sam.tiles import dihedral
from napari_raysam.core.training.step import SamStep
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
                        cache[(i, v)] = encode_tiles(sam, x)
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


def ray_run(dataset: Path, storage: Path, mode: str, workers: int, steps: int,
            model: str = "tiny") -> float:
    from napari_raysam.core.training.config import TrainConfig
    from napari_raysam.core.training.runner import run_training

    cfg = TrainConfig(dataset=str(dataset), model=model, mode=mode, workers=workers, epochs=2,
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


def vit_t_model(path: Path | None = None):
    """MobileSAM's architecture with seeded random weights (equal in every harness); saved as
    our checkpoint at ``path`` for the Ray runs."""
    from napari_raysam.core.sam.models import build_standard_sam, save_checkpoint

    torch.manual_seed(0)
    sam = build_standard_sam("vit_t")
    if path is not None:
        save_checkpoint(path, sam, "vit_t")
    return sam


def isolated(func, *args):
    """``func(*args)`` in a fresh (spawned) process: the in-process harnesses must not leave the
    driver holding GBs of freed-but-kept heap (vit_t full: 3.5 GB after two steps) while the
    Ray worker trains beside it, and every harness starts from the same state."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(func, *args).result()


def harnesses(label: str, samples, steps: int, tmp: Path, make_sam, spec: str,
              ray_workers: tuple[int, ...]) -> dict[str, float]:
    """Objects/s of every harness for one model (``make_sam()`` gives fresh equal weights);
    ``samples`` are at the model's input size, as the Ray loop's crops are."""
    dataset = tmp / f"ds-{label}"
    write_dataset(dataset, [SampleInput(s.image, s.labels, f"s{i}")
                            for i, s in enumerate(samples)], val_fraction=0.25)
    rows: dict[str, float] = {}
    rows[f"{label} plain full"] = isolated(plain_loop, samples, "full", steps, make_sam())
    rows[f"{label} plain decoder"] = isolated(plain_loop, samples, "decoder", steps, make_sam())
    try:
        rows[f"{label} micro-sam SamTrainer full"] = isolated(
            microsam_trainer, samples, steps, tmp / f"ms-{label}", make_sam())
    except Exception as exc:  # noqa: BLE001 - report and go on
        print(f"micro-sam trainer skipped ({label}): {type(exc).__name__}: {exc}")
    for mode in ("full", "decoder"):
        for workers in ray_workers:
            rows[f"{label} ray {workers}w {mode}"] = ray_run(
                dataset, tmp / f"runs-{label}", mode, workers, steps, spec)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny only, few steps, for CI")
    parser.add_argument("--steps", type=int, default=None, help="steps per harness (tiny)")
    parser.add_argument("--vit-t-steps", type=int, default=4, help="steps for vit_t (0: skip)")
    args = parser.parse_args()
    steps = args.steps or (6 if args.smoke else 40)
    vit_t_steps = 0 if args.smoke else args.vit_t_steps
    samples = make_samples(8, seed=1)  # 256 px: tiny's input size
    rows: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            rows.update(harnesses("tiny", samples, steps, tmp, lambda: build_tiny_sam(seed=0),
                                  "tiny", (1, 2)))
            if vit_t_steps:
                spec = str(tmp / "vit_t.pt")
                vit_t_model(Path(spec))
                big = make_samples(4, shape=(1024, 1024), seed=1)  # vit_t's input size
                rows.update(harnesses("vit_t", big, vit_t_steps, tmp, vit_t_model, spec, (1,)))
        finally:
            ray.shutdown()
    print(f"\n{'harness':<34} objects/s   ({N_OBJ} objects x {ROUNDS + 1} rounds; tiny "
          f"{steps} steps" + (f", vit_t {vit_t_steps} steps at 1024 px" if vit_t_steps else "")
          + "; 1 thread per process)")
    for name, value in rows.items():
        print(f"{name:<34} {value:9.2f}")
    def ratio(a: str, b: str) -> str:
        return f"{rows[a] / rows[b]:.2f}" if a in rows and b in rows else "n/a"

    ms = "micro-sam SamTrainer full"
    for label in ("tiny", "vit_t"):
        if f"{label} plain full" in rows:
            for mode in ("full", "decoder"):
                print(f"{label} {mode}: ray 1w / plain = "
                      f"{ratio(f'{label} ray 1w {mode}', f'{label} plain {mode}')}")
            print(f"{label} full: ray 1w / micro-sam = "
                  f"{ratio(f'{label} ray 1w full', f'{label} {ms}')}")
    figures = [f"ray2w_full_over_plain_full={ratio('tiny ray 2w full', 'tiny plain full')}"]
    if vit_t_steps:
        figures += [f"vit_t_ray1w_full_over_plain_full="
                    f"{ratio('vit_t ray 1w full', 'vit_t plain full')}",
                    f"vit_t_ray1w_full_over_microsam={ratio('vit_t ray 1w full', f'vit_t {ms}')}"]
    print("RATIO " + " ".join(figures))


if __name__ == "__main__":
    main()
