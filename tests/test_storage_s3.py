"""The storage URI against a real S3-protocol server on loopback (moto, auth on): uploads by
content hash, the node-local input cache, events, credentials kept out of URIs; GCS URIs."""

from __future__ import annotations

import threading

import pytest

from napari_raysam.core import node_cache
from napari_raysam.core.dataset import SampleInput, validate_dataset, write_dataset
from napari_raysam.core.dataset.on_node import dataset_on_node
from napari_raysam.core.dataset.synthetic import make_samples
from napari_raysam.core.dataset.upload import upload_dataset
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.events import EventLog
from napari_raysam.core.storage import Storage, StorageError, redact, validate_storage_uri
from remote_cluster import S3Server


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture
def aws(s3, monkeypatch):
    for k, v in s3.env("rw").items():
        monkeypatch.setenv(k, v)
    return s3


@pytest.fixture
def dataset(tmp_path):
    samples = make_samples(3, shape=(64, 64))
    return write_dataset(tmp_path / "set", [SampleInput(s.image, s.labels, f"img{i}")
                                            for i, s in enumerate(samples)])


@pytest.mark.parametrize("uri", [
    "s3://bucket/p?endpoint_override=h:9000&access_key=AKIA123&secret_key=hunter2",
    "s3://AKIA123:hunter2@bucket/p",
    "gs://bucket/p?credentials=hunter2",
    "s3://bucket/p?session_token=hunter2",
])
def test_credentials_in_a_uri_are_refused_and_never_repeated(uri):
    with pytest.raises(StorageError, match="credentials|user name or password") as err:
        validate_storage_uri(uri)
    assert "hunter2" not in str(err.value)
    assert "provider chain" in str(err.value) or "environment" in str(err.value)
    assert "hunter2" not in redact(uri)


def test_the_endpoint_travels_with_every_uri(aws, tmp_path):
    st = Storage.open(aws.uri("keep"))
    assert st.uri_of("runs") == aws.uri("keep/runs")
    assert Storage.open(str(tmp_path)).uri_of("runs") == str(tmp_path / "runs")


def test_upload_to_s3_once_then_nothing_sent(aws, dataset):
    st = Storage.open(aws.uri("up"))
    h, uri, up, skipped = upload_dataset(st, dataset.path)
    assert (up, skipped) == (7, 0) and uri == aws.uri(f"up/datasets/{h}")
    assert upload_dataset(st, dataset.path)[2:] == (0, 7)
    assert not [k for k in aws.keys_under("up/") if ".part-" in k]


def test_a_node_copies_a_dataset_once_verified_even_when_two_workers_ask(aws, dataset,
                                                                         monkeypatch):
    st = Storage.open(aws.uri("node"))
    _, uri, _, _ = upload_dataset(st, dataset.path)
    downloads = []
    real = Storage.download

    def counting(self, path, dest, expected_sha256=None):
        downloads.append(path)
        return real(self, path, dest, expected_sha256)

    monkeypatch.setattr(Storage, "download", counting)
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(dataset_on_node(uri)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1 and len(downloads) == 6  # 3 images + 3 labels, once
    assert validate_dataset(got[0]).ok
    assert dataset_on_node(uri) == got[0] and len(downloads) == 6  # reused


def test_a_damaged_remote_file_is_never_cached(aws, dataset):
    st = Storage.open(aws.uri("damaged"))
    h, uri, _, _ = upload_dataset(st, dataset.path)
    aws.client().put_object(Bucket="raysam", Key=f"damaged/datasets/{h}/"
                            f"{dataset.samples[0].image}", Body=b"garbage")
    with pytest.raises(StorageError, match="sha256"):
        dataset_on_node(uri)
    assert not list((node_cache.node_cache_dir() / "datasets").glob("*/*.tif*"))


def test_a_base_model_on_the_client_is_uploaded_by_hash_and_loaded_on_a_node(aws, tmp_path,
                                                                             tiny_model):
    from napari_raysam.core.sam.models import load_model, save_checkpoint

    path = save_checkpoint(tmp_path / "mine.pt", tiny_model.sam, "tiny",
                           tiny_config=tiny_model.tiny_config)
    st = Storage.open(aws.uri("models-test"))
    uri = st.upload_model(path)
    assert "/models/" in uri and uri.endswith("/model.pt?endpoint_override="
                                              f"127.0.0.1:{aws.port}&scheme=http")
    assert st.upload_model(path) == uri
    loaded = load_model(uri, device="cpu")  # what the job does with --model URI
    assert loaded.model_type == "tiny"
    assert loaded.encoder_fingerprint == tiny_model.encoder_fingerprint


def test_events_over_s3_replay_in_order(aws):
    run = Storage.open(aws.uri("ev/runs/r1"))
    log = EventLog(run)
    for e in ({"event": "start"}, {"event": "baseline"}, {"event": "epoch", "epoch": 1},
              {"event": "epoch", "epoch": 1}, {"event": "epoch", "epoch": 2}):
        log.append(e)
    kinds = [(e["event"], e.get("epoch")) for e in EventLog(run).read_all()]
    assert kinds == [("start", None), ("baseline", None), ("epoch", 1), ("epoch", 2)]


def test_job_inputs_from_an_unreadable_storage_name_the_cluster(s3, monkeypatch):
    for k, v in s3.env("bad").items():
        monkeypatch.setenv(k, v)
    with pytest.raises(RaysamError, match="refused the credentials.*the cluster"):
        dataset_on_node(s3.uri("x/datasets/abc"))


def test_gcs_uris_are_understood_and_an_unreachable_gcs_is_named(monkeypatch):
    assert validate_storage_uri("gs://bucket/prefix") == "gs://bucket/prefix"
    with pytest.raises(StorageError, match="names no bucket"):
        validate_storage_uri("gs:///prefix")
    st = Storage.open("gs://raysam-test-bucket/prefix")
    assert st.uri_of("runs") == "gs://raysam-test-bucket/prefix/runs"
    with pytest.raises(StorageError, match="gs://raysam-test-bucket/prefix.*is unreachable"):
        st.check_writable(timeout=2)
