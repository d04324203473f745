"""Embedding cache: reopening the same image (hit) vs computing its embedding (miss).

Ours only (micro-sam's own zarr cache is no part of this figure): ``EmbeddingCache`` on a fresh
folder (compute + write) vs the same call again (hash the pixels, read the entry). vit_b with
random weights at 1024 px; ``--smoke``: tiny at 256 px. Last line: ``RATIO cache_hit=<hit/miss>``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _timing import bench_model, machine, table
from napari_raysam.core.dataset.synthetic import make_sample
from napari_raysam.core.images import to_sam_rgb
from napari_raysam.core.sam.embeddings import EmbeddingCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model at 256 px")
    parser.add_argument("--repeats", type=int, default=None, help="misses to time")
    args = parser.parse_args()
    model, size = bench_model(args.smoke)
    misses = args.repeats or (5 if args.smoke else 2)
    rgb = to_sam_rgb(make_sample((size, size), seed=0).image)
    tmp = Path(tempfile.mkdtemp(prefix="raysam-bench-"))
    miss_t, hit_t = [], []
    try:
        for i in range(misses + 1):  # the first miss is the warm-up
            cache = EmbeddingCache(tmp / str(i))
            start = time.perf_counter()
            cache.get_or_compute(model, rgb, precision="fp32")
            if i:
                miss_t.append(time.perf_counter() - start)
            for _ in range(5):  # hits between misses, so both see the same machine load
                start = time.perf_counter()
                cache.get_or_compute(model, rgb, precision="fp32")
                hit_t.append(time.perf_counter() - start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    miss, hit = statistics.median(miss_t), statistics.median(hit_t)
    print(f"machine: {machine()}; {model.model_type} {size} px; median of {len(miss_t)} misses "
          f"and {len(hit_t)} hits")
    print(table(["case", "seconds", "ratio"], [["miss (compute + write)", miss, 1.0],
                                               ["hit (hash + read)", hit, hit / miss]]))
    print(f"RATIO cache_hit={hit / miss:.4f}")


if __name__ == "__main__":
    main()
