"""Training-set format: write, append, atomicity, bad input, read, validate."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
import tifffile

from dataset_helpers import cells, edit_manifest, inputs, tree
from napari_raysam.core.dataset import (
    SCHEMA_VERSION,
    DatasetError,
    SampleInput,
    open_dataset,
    plan_write,
    planes_to_inputs,
    validate_dataset,
    write_dataset,
)
from napari_raysam.core.dataset import write as dataset_write
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.images import ImagePolicy, to_sam_rgb

# --- writing and reading -------------------------------------------------------------------


def test_write_and_read_round_trip(tmp_path):
    ins = inputs(5)
    calls = []
    ts = write_dataset(tmp_path / "set", ins, seed=3, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (5, 5) and len(calls) == 5
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION == 1
    assert manifest["content_hash"] == ts.content_hash and manifest["seed"] == 3
    rec = manifest["samples"][0]
    for key in ("id", "image", "labels", "shape", "dtype", "channel_axis", "channel_names",
                "image_sha256", "labels_sha256", "n_objects", "split", "source", "plane",
                "created"):
        assert key in rec
    assert [r.split for r in ts.samples].count("val") == 1 and ts.has_val
    assert ts.split_warning is None
    assert len(ts.split("train")) == 4
    for (image, labels, r), inp in zip(ts.iter_samples(normalise=False), ins, strict=True):
        np.testing.assert_array_equal(image, inp.image)
        np.testing.assert_array_equal(labels, inp.labels)
        assert labels.dtype == np.uint16 and r.n_objects == 3 and r.source == inp.source
    image, labels, r = next(ts.iter_samples(verify=True))
    np.testing.assert_array_equal(image, to_sam_rgb(ins[0].image, ImagePolicy()))
    assert image.shape == (40, 48, 3) and image.dtype == np.uint8
    assert validate_dataset(tmp_path / "set").ok
    # same data, same seed -> same content hash and split, wherever it is written
    again = write_dataset(tmp_path / "again", list(reversed(ins)), seed=3)
    assert again.content_hash == ts.content_hash
    with pytest.raises(DatasetError, match="split"):
        ts.split("test")


def test_split_sizes_and_single_image(tmp_path):
    assert len(write_dataset(tmp_path / "ten", inputs(10)).split("val")) == 2
    assert len(write_dataset(tmp_path / "two", inputs(2)).split("val")) == 1
    one = write_dataset(tmp_path / "one", inputs(1))
    assert not one.has_val and "no validation split" in one.split_warning
    seeds = {tuple(r.split for r in write_dataset(tmp_path / f"s{s}", inputs(6), seed=s).samples)
             for s in range(6)}
    assert len(seeds) > 1  # the seed matters


def test_large_ids_stored_as_uint32_and_multichannel(tmp_path):
    img, lab = cells(0, ids=[5, 70000, 2**32 - 1])
    rgb = np.repeat(cells(1)[0][..., None], 3, axis=-1).astype(np.uint8)
    hpa, hpa_lab = cells(2, channels=4)
    ts = write_dataset(tmp_path / "set", [
        SampleInput(img, lab.astype(np.int64), "big ids"),
        SampleInput(rgb, cells(1)[1], "rgb"),
        SampleInput(hpa, hpa_lab, "hpa", channel_axis=-3, channel_names=list("abcd")),
    ])
    big, rgb_r, hpa_r = ts.samples
    assert big.labels_dtype == "uint32" and big.n_objects == 3
    assert rgb_r.channel_axis is None and rgb_r.channel_names == ["red", "green", "blue"]
    assert hpa_r.channel_axis == 0 and hpa_r.channel_names == ["a", "b", "c", "d"]
    image, _ = ts.load(hpa_r, verify=True, normalise=True)
    np.testing.assert_array_equal(image, to_sam_rgb(hpa, ImagePolicy(channel_axis=0)))
    assert int(ts.load(big)[1].max()) == 2**32 - 1


def test_planes_to_inputs(tmp_path):
    a, la = cells(0)
    b, lb = cells(1)
    stack, lstack = np.stack([a, a * 0 + 5, b]), np.stack([la, la * 0, lb])
    got, skipped = planes_to_inputs(stack, lstack, "stack", stack_axis=0)
    assert skipped == [1] and [g.plane for g in got] == [0, 2]
    np.testing.assert_array_equal(got[1].image, b)
    # (Z, C, H, W) with channels on axis 1 -> per-plane channel axis 0
    zc = np.stack([np.stack([a, a * 2]), np.stack([b, b * 2])])
    got, _ = planes_to_inputs(zc, np.stack([la, lb]), "zc", stack_axis=0, channel_axis=1, planes=1)
    assert len(got) == 1 and got[0].plane == 1 and got[0].channel_axis == 0
    assert got[0].image.shape == (2, 40, 48)
    ts = write_dataset(tmp_path / "set", got)
    assert ts.samples[0].plane == 1 and ts.samples[0].source == "zc"
    with pytest.raises(DatasetError, match="does not match"):
        planes_to_inputs(stack, lstack[:, :10], "bad", stack_axis=0)
    with pytest.raises(DatasetError, match="stack of 2D planes"):
        planes_to_inputs(a, la, "2d", stack_axis=0)


# --- append ----------------------------------------------------------------------------------


def test_append_keeps_files_and_splits(tmp_path):
    dest = tmp_path / "set"
    first = write_dataset(dest, inputs(4), seed=7)
    before = tree(dest)
    inode = {p: os.stat(dest / p).st_ino for p in before if p.parts[0] != "manifest.json"}
    ts = write_dataset(dest, inputs(3, start=10), mode="append")
    assert len(ts) == 7 and ts.seed == 7 and ts.content_hash != first.content_hash
    assert [r.split for r in ts.samples[:4]] == [r.split for r in first.samples]
    assert [r.id for r in ts.samples[4:]] == ["s00004", "s00005", "s00006"]
    for rel, data in before.items():
        if rel.name != "manifest.json":
            assert (dest / rel).read_bytes() == data and os.stat(dest / rel).st_ino == inode[rel]
    assert validate_dataset(dest).ok
    # duplicates (by pixel hash) are skipped unless allowed
    plan = plan_write(dest, inputs(1, start=0) + inputs(1, start=20), mode="append")
    assert plan.n_samples == 1 and len(plan.duplicates) == 1 and len(plan.skipped) == 1
    assert "1 sample(s)" in plan.summary()
    with pytest.raises(DatasetError, match="already in"):
        write_dataset(dest, inputs(2), mode="append")
    ts = write_dataset(dest, inputs(1), mode="append", allow_duplicates=True)
    assert len(ts) == 8


def test_append_to_single_image_set_creates_val(tmp_path):
    dest = tmp_path / "set"
    assert not write_dataset(dest, inputs(1)).has_val
    ts = write_dataset(dest, inputs(1, start=5), mode="append")
    assert ts.has_val and len(ts.split("train")) == 1
    # appending to a missing folder creates it
    assert len(write_dataset(tmp_path / "fresh", inputs(2), mode="append")) == 2


# --- bad input -------------------------------------------------------------------------------


def _bad(kind):
    img, lab = cells(0)
    match kind:
        case "shape":
            return img, lab[:, :20], "differ"
        case "empty labels":
            return img, lab * 0, "no objects"
        case "float labels":
            return img, lab.astype(np.float32) + 0.5, "non-integer"
        case "negative":
            return img, -lab, "negative"
        case "too many ids":
            return img, lab.astype(np.int64) * 2**31, "does not fit in uint32"
        case "volume":
            return np.stack([img] * 5), np.stack([lab] * 5), "stack_axis"
        case "volume image":
            return np.stack([img] * 5), lab, "stack_axis"
        case "rgb labels":
            return img, np.stack([lab] * 3, axis=-1), "RGB"
        case "nan":
            img[3, 3] = np.nan
            return img, lab, "NaN"
        case "inf":
            img[3, 3] = np.inf
            return img, lab, "nan_to_num"
        case "constant":
            return np.full_like(img, 7), lab, "constant"
        case "zero size":
            return np.zeros((0, 48), np.float32), np.zeros((0, 48), np.int32), "empty"
        case "bool labels":
            return img, lab > 0, "ndimage.label"


@pytest.mark.parametrize("kind", [
    "shape", "empty labels", "float labels", "negative", "too many ids", "volume", "volume image",
    "rgb labels", "nan", "inf", "constant", "zero size", "bool labels",
])
def test_bad_input_is_rejected_before_writing(tmp_path, kind):
    image, labels, phrase = _bad(kind)
    good = inputs(2)
    with pytest.raises(RaysamError, match=phrase) as info:
        write_dataset(tmp_path / "set", [*good, SampleInput(image, labels, "bad layer")])
    assert "bad layer" in str(info.value) and "nothing was written" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_bad_destinations(tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a napari-raysam training set"):
        write_dataset(other, inputs(1))
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="is a file"):
        write_dataset(tmp_path / "file", inputs(1))
    write_dataset(tmp_path / "set", inputs(1))
    with pytest.raises(DatasetError, match="append"):
        write_dataset(tmp_path / "set", inputs(1, start=3))
    with pytest.raises(DatasetError, match="Nothing to export"):
        plan_write(tmp_path / "x", [])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(write_dataset(empty, inputs(1))) == 1  # an empty folder is fine
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(DatasetError, match="not writable"):
        plan_write(tmp_path / "new", inputs(1))
    with pytest.raises(DatasetError, match="not writable"):
        plan_write(tmp_path / "set", inputs(1, start=4), mode="append")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_destination(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(DatasetError, match="not writable"):
            write_dataset(ro / "set", inputs(1))
    finally:
        ro.chmod(0o700)


# --- atomicity -------------------------------------------------------------------------------


def _disk_full_after(monkeypatch, n_ok: int) -> None:
    real = dataset_write._write_file
    count = {"n": 0}

    def writer(path, data):
        count["n"] += 1
        if count["n"] > n_ok:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(dataset_write, "_write_file", writer)


@pytest.mark.parametrize("n_ok", [0, 3, 6])  # 6 files: the manifest write fails
def test_disk_full_new_set_leaves_nothing(tmp_path, monkeypatch, n_ok):
    _disk_full_after(monkeypatch, n_ok)
    with pytest.raises(DatasetError, match="disk is full"):
        write_dataset(tmp_path / "set", inputs(3))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("n_ok", [1, 4])  # 4 files: the new manifest write fails
def test_disk_full_append_keeps_old_set(tmp_path, monkeypatch, n_ok):
    dest = tmp_path / "set"
    old = write_dataset(dest, inputs(3))
    before = tree(dest)
    _disk_full_after(monkeypatch, n_ok)
    with pytest.raises(DatasetError, match="Nothing was changed"):
        write_dataset(dest, inputs(2, start=10), mode="append")
    assert tree(dest) == before and list(tmp_path.iterdir()) == [dest]
    assert open_dataset(dest).content_hash == old.content_hash


def test_interrupted_append_leaves_a_valid_set(tmp_path, monkeypatch):
    dest = tmp_path / "set"
    old = write_dataset(dest, inputs(2))

    def killed(src, dst):  # the process dies right before the manifest rename
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset_write.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(dest, inputs(1, start=9), mode="append")
    monkeypatch.undo()
    assert open_dataset(dest).content_hash == old.content_hash
    # files a hard kill would leave behind are ignored, reported as warnings
    (dest / "images" / "s00009.tif").write_bytes(b"partial")
    report = validate_dataset(dest)
    assert report.ok and any("s00009.tif" in w for w in report.warnings)


def test_concurrent_append_is_refused(tmp_path):
    dest = tmp_path / "set"
    write_dataset(dest, inputs(2))

    def meanwhile(done, total):  # another export appends while ours is writing
        if done == 1:
            write_dataset(dest, inputs(1, start=30), mode="append")

    with pytest.raises(DatasetError, match="changed while exporting"):
        write_dataset(dest, inputs(2, start=20), mode="append", progress=meanwhile)
    report = validate_dataset(dest)
    assert report.ok and not report.warnings and len(report.dataset) == 3


# --- validation and verification ---------------------------------------------------------------


def test_hand_edited_hash_is_reported_and_verify_raises(tmp_path):
    dest = tmp_path / "set"
    write_dataset(dest, inputs(3))
    edit_manifest(dest, lambda d: d["samples"][1].update(labels_sha256="0" * 64))
    report = validate_dataset(dest)
    assert not report.ok and any("s00001.tif" in p and "sha256" in p for p in report.problems)
    ts = open_dataset(dest)
    with pytest.raises(DatasetError, match=r"labels/s00001\.tif"):
        list(ts.iter_samples(verify=True))
    assert len(list(ts.iter_samples())) == 3  # without verify the data still reads


def test_edited_content_hash_and_files(tmp_path):
    dest = tmp_path / "set"
    write_dataset(dest, inputs(3))
    edit_manifest(dest, lambda d: d.update(content_hash="f" * 64))
    assert any("content_hash" in p for p in validate_dataset(dest).problems)
    with pytest.raises(DatasetError, match="content_hash"):
        next(open_dataset(dest).iter_samples(verify=True))
    dest2 = tmp_path / "set2"
    write_dataset(dest2, inputs(3))
    edit_manifest(dest2, lambda d: d["samples"][0].update(n_objects=9))
    (dest2 / "images" / "s00002.tif").unlink()
    tifffile.imwrite(dest2 / "labels" / "s00001.tif", np.zeros((5, 5), np.uint16))
    problems = "\n".join(validate_dataset(dest2).problems)
    assert "manifest says 9" in problems and "s00002.tif: file missing" in problems
    assert "does not match the image" in problems


def test_newer_schema_and_broken_manifest(tmp_path):
    dest = tmp_path / "set"
    write_dataset(dest, inputs(1))
    edit_manifest(dest, lambda d: d.update(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(DatasetError, match="Upgrade napari-raysam"):
        open_dataset(dest)
    assert "Upgrade" in validate_dataset(dest).problems[0]
    (dest / "manifest.json").write_text("{not json")
    assert not validate_dataset(dest).ok
    with pytest.raises(DatasetError, match="not valid JSON"):
        open_dataset(dest)
    report = validate_dataset(tmp_path / "missing")
    assert not report.ok and "not a valid training set" in report.summary
