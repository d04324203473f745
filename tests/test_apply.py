"""Batch segmentation on a cluster (``napari-raysam apply``): inputs checked one by one, labels
and tables back, the same labels as a plain loop, re-runs that do nothing, cancel that keeps
what is done. Against a real ``ray start --head`` on 127.0.0.1 (Ray Data actor pool)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_raysam import cli
from napari_raysam.core.apply.inputs import InputSkipped, read_planes, split_planes
from napari_raysam.core.apply.segmenter import ApplySettings, segment_planes
from napari_raysam.core.cluster import ClusterProfile
from napari_raysam.core.dataset.synthetic import make_samples
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.runs.apply import fetch_applied, submit_apply
from napari_raysam.core.runs.follow import cancel, follow
from napari_raysam.core.runs.records import RunIndex
from napari_raysam.core.storage import file_sha256


def _tiff(array) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, array)
    return buf.getvalue()


@pytest.mark.parametrize(("shape", "planes", "axis"), [
    ((40, 50), 1, None), ((40, 50, 3), 1, -1), ((5, 40, 50), 5, None)])
def test_images_become_planes(shape, planes, axis):
    got = split_planes(np.ones(shape, np.uint16))
    assert (len(got.planes), got.channel_axis, got.stack) == (planes, axis, len(shape) == 3
                                                              and axis is None)


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("notes.txt", b"hello", "not a TIFF"),
    ("empty.tif", b"", "empty file"),
    ("bad.tif", b"II*\x00garbage", "unreadable TIFF"),
    ("five.tif", _tiff(np.zeros((2, 2, 2, 8, 8), np.uint8)), "5D image"),
    ("zero.tif", _tiff(np.zeros((0, 5), np.uint8)), "zero-size image"),
])
def test_odd_inputs_are_skipped_with_the_reason(name, data, reason):
    with pytest.raises(InputSkipped, match=reason):
        read_planes(name, data)


def _folder(root: Path, n: int, odd: bool, size: int = 192) -> Path:
    folder = root / "images"
    folder.mkdir(parents=True)
    for i, s in enumerate(make_samples(n, shape=(size, size))):
        tifffile.imwrite(folder / f"img{i}.tif", s.image)
    if odd:
        (folder / "notes.txt").write_text("not an image")
        (folder / "bad.tif").write_bytes(b"II*\x00garbage")
        tifffile.imwrite(folder / "five.tif", np.zeros((2, 2, 2, 8, 8), np.uint8))
    return folder


def _rows(out: Path) -> dict[str, dict]:
    with open(out / "table.csv", newline="") as f:
        return {r["image"]: r for r in csv.DictReader(f)}


def _end(lines: str) -> dict:
    events = [json.loads(x) for x in lines.splitlines() if x.startswith("{")]
    return next(e for e in events if e.get("event") == "end")


@pytest.mark.ray
def test_apply_returns_labels_and_table_equal_to_a_plain_loop(ray_head, tmp_path, capsys,
                                                              tiny_cells):
    _, state = ray_head
    folder = _folder(tmp_path, 2, odd=True)
    out = tmp_path / "out"
    argv = ["apply", str(folder), "--model", "tiny_cells", "--out", str(out), "--address",
            state.address, "--storage", str(tmp_path / "storage"), "--json"]
    assert cli.main(argv) == 0
    first = _end(capsys.readouterr().out)
    rows = _rows(out)
    assert {k: rows[k]["status"] for k in rows} == {
        "img0.tif": "ok", "img1.tif": "ok", "notes.txt": "skipped", "bad.tif": "skipped",
        "five.tif": "skipped"}
    assert "unreadable TIFF" in rows["bad.tif"]["reason"] and "5D" in rows["five.tif"]["reason"]
    for i in range(2):
        labels = tifffile.imread(out / f"img{i}_labels.tif")
        planes = read_planes("x.tif", (folder / f"img{i}.tif").read_bytes())
        plain = segment_planes(tiny_cells, planes, ApplySettings(), str(tmp_path / "emb"))
        np.testing.assert_array_equal(labels, plain)
        assert int(rows[f"img{i}.tif"]["objects"]) == len(np.unique(plain)) - 1 > 0
    with open(out / "objects.csv", newline="") as f:
        objects = list(csv.DictReader(f))
    assert len(objects) == sum(int(r["objects"]) for r in rows.values())
    assert first["segmented"] == 4  # every .tif reached a worker; notes.txt did not
    # the same inputs and model again: nothing is segmented, the same results come back
    assert cli.main([*argv[:5], str(tmp_path / "out2"), *argv[6:]]) == 0
    again = _end(capsys.readouterr().out)
    assert (again["segmented"], again["reused"]) == (0, 4)
    assert _rows(tmp_path / "out2") == rows


@pytest.mark.ray
def test_cancel_keeps_finished_images_and_a_rerun_does_the_rest(ray_head, tmp_path):
    _, state = ray_head
    folder = _folder(tmp_path, 6, odd=False)
    profile = ClusterProfile(name="t", address=state.address, storage=str(tmp_path / "st"))
    record = submit_apply(profile, folder, "tiny_cells", workers=1)
    for event in follow(record):
        if event.get("event") == "progress":
            break
    cancel(RunIndex().get(record.name))
    kept = fetch_applied(RunIndex().get(record.name), tmp_path / "kept")
    done = sorted(p.name for p in kept.glob("*_labels.tif"))
    assert 1 <= len(done) < 6, done
    rerun = submit_apply(profile, folder, "tiny_cells", workers=1)
    events = list(follow(rerun))
    end = next(e for e in events if e.get("event") == "end")
    assert end["reused"] >= len(done) and end["reused"] + end["segmented"] == 6
    assert RunIndex().get(rerun.name).state == "SUCCEEDED"
    assert len(list(fetch_applied(RunIndex().get(rerun.name), tmp_path / "all")
                    .glob("*_labels.tif"))) == 6


def test_bad_requests_are_refused_before_anything_runs(tmp_path):
    profile = ClusterProfile(name="t", address="http://127.0.0.1:9", storage=str(tmp_path / "s"))
    with pytest.raises(RaysamError, match="at least 1"):
        submit_apply(profile, tmp_path, "tiny_cells", workers=0)
    assert not (tmp_path / "s").exists()


@pytest.fixture(scope="module")
def tiny_cells():
    from napari_raysam.core.sam.models import load_model

    return load_model("tiny_cells", device="cpu")



@pytest.mark.ray
def test_unwritable_storage_is_refused_before_any_upload(ray_head, tmp_path):
    _, state = ray_head
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the storage folder should be")
    folder = _folder(tmp_path, 1, odd=False)
    profile = ClusterProfile(name="t", address=state.address, storage=str(blocker / "st"))
    with pytest.raises(RaysamError, match="Cannot write to the storage"):
        submit_apply(profile, folder, "tiny_cells")
    assert RunIndex().list() == []


# --- faults: a worker killed mid-batch, a storage that refuses writes mid-job ---------------


def _segmenter_processes(head_pid: int) -> list:
    """The head's descendants that are Ray Data actors running our Segmenter."""
    import psutil

    out = []
    for proc in psutil.Process(head_pid).children(recursive=True):
        try:
            if "MapBatches(Segmenter)" in " ".join(proc.cmdline()):
                out.append(proc)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.ray
def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(ray_head, tmp_path):
    import os
    import signal

    _, state = ray_head
    folder = _folder(tmp_path, 6, odd=False, size=128)
    profile = ClusterProfile(name="t", address=state.address, storage=str(tmp_path / "st"))
    record = submit_apply(profile, folder, "tiny_cells", workers=2)
    events, killed = [], None
    for event in follow(record):
        events.append(event)
        if killed is None and event.get("event") == "progress":
            actors = _segmenter_processes(state.pid)
            assert len(actors) == 2, [a.cmdline() for a in actors]
            killed = event["done"], actors[0].pid
            os.kill(actors[0].pid, signal.SIGKILL)
    assert killed is not None and killed[0] < 6, killed  # killed while images were left
    assert RunIndex().get(record.name).state == "SUCCEEDED", events[-3:]
    end = next(e for e in events if e.get("event") == "end")
    assert (end["status"], end["segmented"], end["total"]) == ("ok", 6, 6)
    out = fetch_applied(RunIndex().get(record.name), tmp_path / "out")
    with open(out / "table.csv", newline="") as f:
        images = [r["image"] for r in csv.DictReader(f) if r["status"] == "ok"]
    assert images == [f"img{i}.tif" for i in range(6)]  # each once, none lost
    assert sorted(p.name for p in out.glob("*_labels.tif")) == [
        f"img{i}_labels.tif" for i in range(6)]
    rows = json.loads((tmp_path / "st" / "runs" / record.name / "results.json").read_text())
    assert sorted(r["image"] for r in rows) == images


class _FullDisk:
    """A pyarrow filesystem whose disk fills up while writing a file whose name contains
    ``when``: half the bytes land, then ENOSPC (what a full local disk does)."""

    def __init__(self, fs, when: str):
        self.fs, self.when = fs, when

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def open_output_stream(self, path: str):
        stream = self.fs.open_output_stream(path)
        if self.when not in path:
            return stream
        return _FillingStream(stream)


class _FillingStream:
    def __init__(self, stream):
        self.stream = stream

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()

    def write(self, data: bytes) -> None:
        import errno
        import os

        self.stream.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("fails", [".tif.part", ".json.part"])
def test_a_full_storage_mid_job_leaves_no_half_outputs(tmp_path, fails):
    """The disk fills while an image's labels (or its row) are written: a clear error naming
    the storage and the fix; that image has no outputs at all (a re-run redoes it), the image
    finished before stays done."""
    from napari_raysam.core.apply.job import done_rows
    from napari_raysam.core.apply.segmenter import Segmenter
    from napari_raysam.core.storage import Storage

    folder = _folder(tmp_path, 2, odd=False, size=128)
    shas = [file_sha256(folder / f"img{i}.tif") for i in range(2)]
    seg = Segmenter("tiny_cells", str(tmp_path / "st"), "key", ApplySettings(points_per_side=4))
    real = seg.storage
    assert seg.one("img0.tif", str(folder / "img0.tif"), shas[0])["status"] == "ok"
    before = sorted(p.name for p in (tmp_path / "st" / "applied" / "key").iterdir())
    seg.storage = Storage(uri=real.uri, fs=_FullDisk(real.fs, fails), root=real.root)
    out = seg({"name": ["img1.tif"], "path": [str(folder / "img1.tif")], "sha256": [shas[1]]})
    row = json.loads(out["row"][0])
    assert list(row) == ["failed"]  # returned to the driver, which stops the run with it
    text = row["failed"]
    assert "img1.tif" in text and str(tmp_path / "st") in text
    assert "is full" in text and "Free space" in text and "run the same command again" in text
    assert sorted(p.name for p in (tmp_path / "st" / "applied" / "key").iterdir()) == before
    assert list(done_rows(real, "key")) == [shas[0]]
    seg.storage = real  # space freed: the image is done on the next try
    assert seg.one("img1.tif", str(folder / "img1.tif"), shas[1])["status"] == "ok"
    assert sorted(done_rows(real, "key")) == sorted(shas)


@pytest.mark.ray
def test_storage_refusing_a_write_mid_job_fails_the_run_with_the_reason(ray_head, tmp_path):
    """A real filesystem error on the cluster while the job runs (the last image's row path is
    taken by a folder: its rename fails, root or not): the run ends FAILED with the reason,
    what was finished is kept and fetched, a re-run does only the rest."""
    from napari_raysam.core.apply.job import model_key
    from napari_raysam.core.runs.text import failure_reason

    _, state = ray_head
    folder = _folder(tmp_path, 3, odd=False, size=128)
    key = model_key("tiny_cells", ApplySettings())
    blocker = tmp_path / "st" / "applied" / key / f"{file_sha256(folder / 'img2.tif')}.json"
    blocker.mkdir(parents=True)
    profile = ClusterProfile(name="t", address=state.address, storage=str(tmp_path / "st"))
    record = submit_apply(profile, folder, "tiny_cells", workers=1)
    events = list(follow(record))
    assert RunIndex().get(record.name).state == "FAILED"
    status = next(e for e in events if e.get("status") == "FAILED")
    assert status["message"].startswith("the batch segmentation job failed")
    reason = failure_reason(status["log_tail"], limit=2000)
    assert reason.startswith("Could not write the results of img2.tif"), status["log_tail"]
    assert str(tmp_path / "st") in reason and "writable" in reason
    end = next(e for e in events if e.get("event") == "end")
    assert (end["status"], end["segmented"]) == ("failed", 2)
    assert not any(p.name.startswith(blocker.name[:-5] + ".tif") for p in blocker.parent.iterdir())
    kept = fetch_applied(RunIndex().get(record.name), tmp_path / "kept")
    assert sorted(p.name for p in kept.glob("*_labels.tif")) == ["img0_labels.tif",
                                                                  "img1_labels.tif"]
    blocker.rmdir()  # the storage is writable again
    rerun = submit_apply(profile, folder, "tiny_cells", workers=1)
    end = next(e for e in follow(rerun) if e.get("event") == "end")
    assert (end["status"], end["reused"], end["segmented"]) == ("ok", 2, 1)
