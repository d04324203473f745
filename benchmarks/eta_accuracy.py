"""How good is the job's ETA? One tiny decoder run on a local Ray cluster; the estimate each
progress/epoch event carried is compared with the time that was really left (from that event's
arrival to the last epoch's).

    python benchmarks/eta_accuracy.py [--epochs 3] [--steps 40] [--workers 1]

Prints one line per event and ``RATIO eta_first_over_actual=...`` (the estimate streamed after
the first steps, over the real time left; 1.0 is exact). Everything is written under a temporary
folder; the Ray instance is this process's own (``address="local"``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="raysam-eta-") as tmp:
        os.environ["NAPARI_RAYSAM_CACHE"] = str(Path(tmp) / "cache")
        import ray

        from napari_raysam.core.dataset import SampleInput, write_dataset
        from napari_raysam.core.dataset.synthetic import make_samples
        from napari_raysam.core.training.config import TrainConfig
        from napari_raysam.core.training.runner import run_training

        samples = make_samples(6, style="elongated", seed=2)
        ds = write_dataset(Path(tmp) / "ds", [SampleInput(s.image, s.labels, f"e{i}")
                                              for i, s in enumerate(samples)], val_fraction=0.34)
        ray.init(address="local", num_cpus=max(2, args.workers), include_dashboard=False,
                 log_to_driver=False,
                 runtime_env={"env_vars": {"NAPARI_RAYSAM_CACHE": os.environ[
                     "NAPARI_RAYSAM_CACHE"]}})
        seen: list[tuple[float, dict]] = []
        cfg = TrainConfig(dataset=str(ds.path), model="tiny", mode="decoder",
                          workers=args.workers, epochs=args.epochs, lr=3e-3,
                          correction_rounds=1, steps_per_epoch=args.steps,
                          storage=str(Path(tmp) / "runs"))
        run_training(cfg, on_event=lambda e: seen.append((time.monotonic(), e)),
                     log_to_driver=False)
        ray.shutdown()
    timed = [(t, e) for t, e in seen if e.get("eta_s") is not None]
    end = max(t for t, e in timed if e["event"] == "epoch")
    first = None
    for t, e in timed:
        actual = end - t
        where = f"epoch {e['epoch']}" + (f" step {e['step']}" if e["event"] == "progress" else "")
        print(f"{e['event']:<8} {where:<20} ETA {e['eta_s']:7.1f} s  actual {actual:7.1f} s")
        if first is None and e["event"] == "progress":
            first = (e["eta_s"], actual)
    if first and first[1] > 0:
        print(f"RATIO eta_first_over_actual={first[0] / first[1]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
