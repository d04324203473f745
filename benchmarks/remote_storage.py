"""Object storage vs a shared folder: upload, time to first metric, checkpoint fetch.

    python benchmarks/remote_storage.py [--smoke]

Side by side in one run, each on the same work: an S3-protocol server on 127.0.0.1
(``moto_server``, the tests' :class:`S3Server`) and a local folder standing in for NFS.

* upload: a 200-image training set (256 px uint16 + labels) through ``upload_dataset``;
  seconds and bytes sent, then the same set again (nothing is sent: every file is already there
  with its sha256);
* time to first metric: ``runs.submit`` + ``runs.follow`` to the embedded LocalHead (warm),
  storage = the S3 URI vs the folder; seconds to the first ``epoch`` event;
* fetch: a vit_b-sized ``model.pt`` (375 MB of random bytes) plus report.json in a finished
  run's folder, fetched by ``runs.fetch`` (sha256-checked, atomic) into the model store.

The last line is ``RATIO ...`` (S3 over folder, and the raw seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _harness import isolate, synthetic_set  # noqa: E402
from _timing import machine, table  # noqa: E402

OPTIONS = {"model": "tiny", "mode": "decoder", "epochs": 1, "workers": 1, "lr": 1e-4}


def big_set(dest: Path, n: int):
    import numpy as np

    from napari_raysam.core.dataset import SampleInput, write_dataset
    from napari_raysam.core.dataset.synthetic import make_samples

    samples = make_samples(n, shape=(256, 256), seed=5)
    return write_dataset(dest, [SampleInput((s.image * 50).astype(np.uint16), s.labels, f"s{i}")
                                for i, s in enumerate(samples)], val_fraction=0.2)


def upload(storage_uri: str, ts) -> dict:
    from napari_raysam.core.dataset.upload import upload_dataset
    from napari_raysam.core.storage import Storage

    st = Storage.open(storage_uri)
    sizes = {r.image: (ts.path / r.image).stat().st_size for r in ts.samples}
    sizes.update({r.labels: (ts.path / r.labels).stat().st_size for r in ts.samples})
    t0 = time.perf_counter()
    _, _, up, skipped = upload_dataset(st, ts.path)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, _, up2, skipped2 = upload_dataset(st, ts.path)
    again = time.perf_counter() - t0
    return {"first_s": first, "bytes": sum(sizes.values()) + (ts.path / "manifest.json")
            .stat().st_size, "files": up, "again_s": again, "again_files": up2,
            "again_skipped": skipped2}


def first_metric(head, storage_uri: str, dataset: Path) -> float:
    from napari_raysam.core import runs
    from napari_raysam.core.cluster import ClusterProfile

    profile = ClusterProfile(storage=storage_uri)
    t0 = time.perf_counter()
    record = runs.submit(profile, dataset, OPTIONS, head=head)
    first = None
    for event in runs.follow(record, replay=True, poll=0.5, head=head):
        if event.get("event") == "epoch" and first is None:
            first = time.perf_counter() - t0
        if event.get("event") == "status" and event["status"] in ("SUCCEEDED", "FAILED",
                                                                   "STOPPED"):
            if event["status"] != "SUCCEEDED":
                raise RuntimeError(f"run ended {event['status']}: {event.get('log_tail')}")
            break
    if first is None:
        raise RuntimeError("no epoch event")
    return first


def fetch_time(storage_uri: str, size_mb: int, root: Path) -> float:
    from napari_raysam.core import runs
    from napari_raysam.core.runs.records import RunIndex, RunRecord
    from napari_raysam.core.storage import Storage

    st = Storage.open(storage_uri)
    name = f"bench-{os.urandom(3).hex()}"
    blob = root / "model.bin"
    if not blob.exists():
        with open(blob, "wb") as fh:
            for _ in range(size_mb):
                fh.write(os.urandom(1 << 20))
    st.put_file(blob, st.path("runs", name, "model.pt"))
    st.write_bytes(st.path("runs", name, "report.json"), json.dumps({"before": {}}).encode())
    record = RunIndex().put(RunRecord(name=name, profile="local", address="local",
                                      storage=st.uri, dataset_hash="x", dataset_uri="x",
                                      config={}, submitted="now", state="SUCCEEDED"))
    t0 = time.perf_counter()
    runs.fetch(record, store=root / f"store-{name}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="20 images, 40 MB, 1 run each")
    args = parser.parse_args()
    n_images, size_mb, repeats = (20, 40, 1) if args.smoke else (200, 375, 3)
    root = isolate("raysam-remote-")
    from napari_raysam.core.cluster.local_head import LocalHead
    from remote_cluster import S3Server

    s3 = S3Server(root)
    os.environ.update(s3.env("rw"))  # this process and the head it starts: the provider chain
    head = LocalHead(state_file=root / "head.json", num_cpus=2)
    print(f"machine: {machine()}; {n_images} images, {size_mb} MB checkpoint, {repeats} "
          "run(s) each", flush=True)
    kinds = {"s3": s3.uri("bench"), "folder": str(root / "shared")}
    rows, res = [], {}
    try:
        ts = big_set(root / "set", n_images)
        for kind, uri in kinds.items():
            res[kind] = {"upload": upload(uri, ts)}
            print(f"  {kind} upload: {res[kind]['upload']}", flush=True)
        head.start()
        small = synthetic_set(root / "small", n=3).path
        for kind in kinds:
            res[kind]["ttfm"] = []
        for _ in range(repeats):  # interleaved so drift hits both alike
            for kind, uri in kinds.items():
                res[kind]["ttfm"].append(first_metric(head, uri, small))
                print(f"  {kind} first metric: {res[kind]['ttfm'][-1]:.1f} s", flush=True)
        for kind in kinds:
            res[kind]["fetch"] = []
        for _ in range(repeats):
            for kind, uri in kinds.items():
                res[kind]["fetch"].append(fetch_time(uri, size_mb, root))
                print(f"  {kind} fetch: {res[kind]['fetch'][-1]:.2f} s", flush=True)
    finally:
        head.stop()
        s3.stop()
        shutil.rmtree(root, ignore_errors=True)
    for kind in kinds:
        u = res[kind]["upload"]
        rows.append([kind, u["first_s"], u["bytes"] / 1e6, u["files"], u["again_s"],
                     u["again_files"], statistics.median(res[kind]["ttfm"]),
                     statistics.median(res[kind]["fetch"]), size_mb / statistics.median(
                         res[kind]["fetch"])])
    print(table(["storage", "upload s", "upload MB", "files sent", "re-upload s",
                 "re-upload files sent", "first metric s", "fetch s", "fetch MB/s"], rows))
    s3_row, folder_row = rows
    print(f"RATIO upload_s3_over_folder={s3_row[1] / folder_row[1]:.2f} "
          f"reupload_files_sent_s3={s3_row[5]} "
          f"first_metric_s3_over_folder={s3_row[6] / folder_row[6]:.2f} "
          f"fetch_s3_over_folder={s3_row[7] / folder_row[7]:.2f} "
          f"upload_s3_s={s3_row[1]:.1f} first_metric_s3_s={s3_row[6]:.1f} "
          f"fetch_s3_s={s3_row[7]:.1f}")


if __name__ == "__main__":
    main()
