"""Hostile training sets: manifests whose sample paths leave the set's folder (relative,
absolute, Windows-style, through a symbolic link) are refused before any file is opened, and
no message quotes a file's contents."""

from __future__ import annotations

import pytest

from dataset_helpers import edit_manifest, inputs
from napari_raysam.core.dataset import DatasetError, open_dataset, validate_dataset, write_dataset

SECRET = b"PSWD:x:0:0:SECRET-CONTENT:/root:/bin/bash\n"  # decoders quote the first bytes


@pytest.fixture
def reads(monkeypatch):
    """Every path read through Path.read_bytes/read_text (how sets are read), in order."""
    from pathlib import Path

    seen: list[Path] = []
    for name in ("read_bytes", "read_text"):
        original = getattr(Path, name)

        def spy(self, *a, _original=original, **k):
            seen.append(Path(self).absolute())
            return _original(self, *a, **k)

        monkeypatch.setattr(Path, name, spy)
    return seen


@pytest.mark.parametrize("evil", ["../../../../etc/hostname", "/etc/passwd", "../outside.tif",
                                  "images/../../outside.tif", "C:/Windows/win.ini",
                                  "images\\..\\..\\outside.tif", ""])
def test_sample_paths_outside_the_set_are_refused_before_any_file_is_opened(tmp_path, reads,
                                                                           evil):
    dest = tmp_path / "set"
    write_dataset(dest, inputs(2))
    (tmp_path / "outside.tif").write_bytes(SECRET)
    edit_manifest(dest, lambda d: d["samples"][1].update(image=evil))
    reads.clear()
    with pytest.raises(DatasetError, match="outside the training set's folder") as info:
        open_dataset(dest)
    assert "s00001" in str(info.value) and "SECRET" not in str(info.value)
    report = validate_dataset(dest)
    assert not report.ok and "outside the training set's folder" in report.text()
    assert "SECRET" not in report.text()
    assert {p.name for p in reads} == {"manifest.json"}  # nothing but the manifest was read


def test_a_symlink_out_of_the_set_is_refused(tmp_path, reads):
    dest = tmp_path / "set"
    write_dataset(dest, inputs(2))
    (tmp_path / "outside.tif").write_bytes(SECRET)
    (dest / "labels" / "s00001.tif").unlink()
    (dest / "labels" / "s00001.tif").symlink_to(tmp_path / "outside.tif")
    reads.clear()
    with pytest.raises(DatasetError, match="outside the training set's folder"):
        open_dataset(dest)
    assert "SECRET" not in validate_dataset(dest).text()
    assert {p.name for p in reads} == {"manifest.json"}
    (dest / "labels" / "s00001.tif").unlink()  # a link that stays inside the set is fine
    (dest / "labels" / "s00001.tif").symlink_to(dest / "labels" / "s00000.tif")
    assert len(open_dataset(dest)) == 2


def test_undecodable_files_are_reported_without_their_contents(tmp_path):
    dest = tmp_path / "set"
    write_dataset(dest, inputs(2))
    (dest / "images" / "s00000.tif").write_bytes(SECRET)
    text = validate_dataset(dest).text()
    assert "s00000.tif cannot be read as TIFF (TiffFileError)" in text and "PSWD" not in text
    ts = open_dataset(dest)
    with pytest.raises(DatasetError, match="cannot be read as TIFF") as info:
        ts.load(ts.samples[0])
    assert "PSWD" not in str(info.value)
    (dest / "manifest.json").write_bytes(b"\xff" + SECRET)
    with pytest.raises(DatasetError, match="not UTF-8") as info:
        open_dataset(dest)
    assert "PSWD" not in str(info.value) and "xff" not in str(info.value)
