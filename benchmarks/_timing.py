"""Shared timing helpers for the benchmark scripts (not a benchmark itself)."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
                ) -> dict[str, float]:
    """Median seconds per callable; calls alternate (order rotated each round) so a noisy,
    shared machine slows every contender alike."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def table(headers: list[str], rows: list[list]) -> str:
    """A small markdown table."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def machine() -> str:
    """CPU model, cores, torch version and its CPU capability."""
    import os

    import torch

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})")


def bench_model(smoke: bool):
    """The model a benchmark times: the tiny SAM (256 px) for --smoke, else a random vit_b
    (1024 px; weights do not change the cost). Returns (model, image size)."""
    import torch

    from napari_raysam.core.sam.models import LoadedModel, build_standard_sam, load_model

    if smoke:
        return load_model("tiny", device="cpu"), 256
    torch.manual_seed(0)
    return LoadedModel("vit_b", "vit_b", build_standard_sam("vit_b").eval(), "cpu"), 1024
