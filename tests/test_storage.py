"""Storage URIs (pyarrow.fs): validation, dataset upload skip-by-hash, checked downloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_raysam.core import storage as storage_mod
from napari_raysam.core.dataset import SampleInput, write_dataset
from napari_raysam.core.dataset.synthetic import make_samples
from napari_raysam.core.dataset.upload import upload_dataset
from napari_raysam.core.storage import Storage, StorageError, validate_storage_uri


@pytest.fixture
def dataset(tmp_path):
    samples = make_samples(3, shape=(64, 64))
    inputs = [SampleInput(s.image, s.labels, f"img{i}") for i, s in enumerate(samples)]
    return write_dataset(tmp_path / "my set ü", inputs)  # spaces and non-ASCII on purpose


@pytest.mark.parametrize("uri", ["ftp://host/x", "hdfs2://x", "htp://bucket/x"])
def test_unknown_scheme_is_refused(uri):
    with pytest.raises(StorageError, match="not supported"):
        validate_storage_uri(uri)


@pytest.mark.parametrize("uri,match", [("", "empty"), ("s3:bucket/x", "without '//'"),
                                       ("s3:///path", "names no bucket")])
def test_malformed_uris(uri, match):
    with pytest.raises(StorageError, match=match):
        validate_storage_uri(uri)


def test_local_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert validate_storage_uri("runs dir") == str(tmp_path / "runs dir")
    assert validate_storage_uri("s3://bucket/prefix") == "s3://bucket/prefix"
    assert validate_storage_uri("file:///tmp/x") == "file:///tmp/x"


def test_upload_skips_what_is_there_and_repairs_damage(dataset, tmp_path):
    st = Storage.open(str(tmp_path / "storage"))
    h, uri, up, skipped = upload_dataset(st, dataset.path)
    assert h == dataset.content_hash and uri == str(tmp_path / "storage" / "datasets" / h)
    assert up == 7 and skipped == 0  # 3 images, 3 labels, manifest
    assert upload_dataset(st, dataset.path)[2:] == (0, 7)
    damaged = Path(uri) / dataset.samples[0].image
    damaged.write_bytes(b"garbage")
    assert upload_dataset(st, dataset.path)[2:] == (1, 6)
    from napari_raysam.core.dataset import validate_dataset

    assert validate_dataset(uri).ok
    assert not list(Path(uri).rglob("*.part-*"))


def test_upload_to_a_non_local_filesystem(dataset):
    st = Storage.open("mock:///bucket/prefix")
    h, uri, up, _ = upload_dataset(st, dataset.path)
    assert uri == f"mock://bucket/prefix/datasets/{h}" and up == 7
    assert upload_dataset(st, dataset.path)[2] == 0
    assert st.sha256(st.path("datasets", h, dataset.samples[0].labels)) == \
        dataset.samples[0].labels_sha256


def test_download_is_checked_and_atomic(tmp_path, monkeypatch):
    st = Storage.open(str(tmp_path / "remote"))
    st.fs.create_dir(st.path("runs"), recursive=True)
    (tmp_path / "remote" / "runs" / "model.pt").write_bytes(b"weights" * 1000)
    dest = tmp_path / "store" / "model.pt"
    sha = st.download(st.path("runs", "model.pt"), dest)
    assert dest.read_bytes() == b"weights" * 1000 and len(sha) == 64
    with pytest.raises(StorageError, match="recorded sha256"):
        st.download(st.path("runs", "model.pt"), tmp_path / "x" / "m.pt", expected_sha256="0" * 64)
    assert not (tmp_path / "x" / "m.pt").exists()

    real = storage_mod._hash_stream

    def torn(stream, sink=None):  # a transfer that loses its tail
        if sink is None:
            return real(stream)
        data = stream.read()
        sink(data[: len(data) // 2])
        return storage_mod.hashlib.sha256(data[: len(data) // 2]).hexdigest()

    monkeypatch.setattr(storage_mod, "_hash_stream", torn)
    with pytest.raises(StorageError, match="damaged"):
        st.download(st.path("runs", "model.pt"), tmp_path / "y" / "model.pt")
    assert list((tmp_path / "y").iterdir()) == []  # no partial file left, nothing registered


def test_missing_remote_file_is_a_clear_error(tmp_path):
    st = Storage.open(str(tmp_path))
    with pytest.raises(StorageError, match="does not exist"):
        st.download(st.path("runs", "nope.pt"), tmp_path / "d.pt")


def test_unwritable_storage_is_reported(tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    st = Storage.open(str(blocker / "sub"))
    with pytest.raises(StorageError, match="Cannot write"):
        st.check_writable()
    Storage.open(str(tmp_path / "ok")).check_writable()
