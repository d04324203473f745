"""Debris of killed exports: who removes what, and what stays (core.dataset.debris)."""

from __future__ import annotations

import os
import sys

from dataset_helpers import inputs, tree
from napari_raysam.core.dataset import debris as dataset_debris
from napari_raysam.core.dataset import validate_dataset, write_dataset


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()  # reaped: the PID names no process now
    return proc.pid


def test_debris_of_dead_writers_is_swept_live_and_unknown_ones_kept(tmp_path):
    """Only debris whose writer provably died on this host goes; a live writer's (our own PID),
    another host's and an untagged (old-style) temp folder stay, as do referenced files."""
    dest = tmp_path / "set"
    old = write_dataset(dest, inputs(2))
    host, dead, me = dataset_debris.host_id(), _dead_pid(), os.getpid()
    gone = tmp_path / f".set.raysam-tmp-0000dead-{dead}-{host}"
    gone_other = tmp_path / f".other.raysam-tmp-1111dead-{dead}-{host}"
    live = tmp_path / f".set.raysam-tmp-0000beef-{me}-{host}"
    other_host = "f" * 8 if host != "f" * 8 else "e" * 8
    elsewhere = tmp_path / f".set.raysam-tmp-0000cafe-{dead}-{other_host}"
    untagged = tmp_path / ".set.raysam-tmp-0000f00d"
    for folder in (gone, gone_other, live, elsewhere, untagged):
        (folder / "images").mkdir(parents=True)
        (folder / "images" / "s00000.tif").write_bytes(b"half")
    for token, pid in (("aaaa0001", dead), ("bbbb0002", me)):  # a killed and a running append
        (dest / f".raysam-append-{token}-{pid}-{host}").touch()
        for sub in ("images", "labels"):
            (dest / sub / f"s00007-{token}.tif").write_bytes(b"half")
    (dest / ".manifest.json.tmp-aaaa0001").write_bytes(b"{")
    report = validate_dataset(dest)
    assert report.ok, report.text()
    notes = "\n".join(report.warnings)
    assert f"{gone.name}: the hidden temp folder of an interrupted new export (its writer " \
        f"(pid {dead}) is gone); the next export or append into {tmp_path} removes it" in notes
    assert "2 file(s) of an interrupted append" in notes and "images/*-aaaa0001.tif" in notes
    assert f"(pid {me}) is still running" in notes and "cannot be checked" in notes
    assert gone_other.name not in notes  # another set's folder is not this set's debris

    added = write_dataset(dest, inputs(1, start=40), mode="append")

    assert not gone.exists() and not gone_other.exists()  # any dead writer's, same parent
    assert live.exists() and elsewhere.exists() and untagged.exists()
    left = sorted(p.name for p in dest.rglob("*") if "aaaa0001" in p.name)
    assert left == []
    assert len([p for p in dest.rglob("*") if "bbbb0002" in p.name]) == 3  # marker + 2 files
    assert len(added) == len(old) + 1 and validate_dataset(dest).ok


def test_sweep_keeps_files_a_committed_append_references(tmp_path):
    """Killed after the manifest rename but before its marker was removed: only the marker
    goes; the files it wrote are part of the set."""
    dest = tmp_path / "set"
    write_dataset(dest, inputs(2))
    ts = write_dataset(dest, inputs(1, start=10), mode="append")
    token = ts.samples[-1].image.rsplit("-", 1)[1].removesuffix(".tif")
    marker = dest / f".raysam-append-{token}-{_dead_pid()}-{dataset_debris.host_id()}"
    marker.touch()
    tree_before = {k: v for k, v in tree(dest).items() if k.name != marker.name}
    removed = dataset_debris.sweep_debris(dest)
    assert removed == [marker] and not marker.exists()
    assert tree(dest) == tree_before and validate_dataset(dest).ok


def test_a_new_export_sweeps_a_dead_temp_folder_beside_it(tmp_path):
    dead = tmp_path / f".set.raysam-tmp-12345678-{_dead_pid()}-{dataset_debris.host_id()}"
    (dead / "labels").mkdir(parents=True)
    note = validate_dataset(tmp_path / "set").warnings  # the set itself never appeared
    assert len(note) == 1 and "next export or append into" in note[0]
    write_dataset(tmp_path / "set", inputs(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
    assert not validate_dataset(tmp_path / "set").warnings
