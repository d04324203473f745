"""How long sharing a model as a bioimage.io package takes: micro-sam's exporter (it runs the
model on the test image and checks the package's test outputs) and bioimage.io's own test of
the written package, for a vit_b checkpoint with seeded random weights.

    python benchmarks/bioimageio_export.py [--model-type vit_b] [--threads N]

Prints wall time and this process's CPU time (user + system) per step: on a shared machine
the CPU time is the steadier figure. Everything is written under a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, table  # noqa: E402


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-type", default="vit_b")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: "
                                                                  "torch's own choice)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from napari_raysam.core.sam.architectures import build_standard_sam
    from napari_raysam.core.sam.export import export_bioimageio, validate_package
    from napari_raysam.core.sam.models import save_checkpoint

    root = Path(tempfile.mkdtemp(prefix="raysam-bench-bioimageio-"))
    rows = []
    try:
        torch.manual_seed(0)
        t, c = time.perf_counter(), cpu_s()
        ckpt = save_checkpoint(root / "model.pt", build_standard_sam(args.model_type),
                               args.model_type, lineage={"base_model": args.model_type})
        rows.append(["write checkpoint", time.perf_counter() - t, cpu_s() - c])
        t, c = time.perf_counter(), cpu_s()
        result = export_bioimageio(str(ckpt), root / "model.zip", validate=False)
        rows.append(["export (micro-sam, incl. its checks)", time.perf_counter() - t,
                     cpu_s() - c])
        t, c = time.perf_counter(), cpu_s()
        status = validate_package(result.path)
        rows.append([f"bioimage.io test ({status})", time.perf_counter() - t, cpu_s() - c])
        print(f"{machine()}; load average {os.getloadavg()[0]:.1f}; "
              f"package {result.path.stat().st_size / 1e6:.0f} MB")
        print(table(["step", "wall s", "CPU s"], rows))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
