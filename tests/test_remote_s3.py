"""Remote fine-tuning with no shared filesystem: an S3 server on loopback (moto, auth on) and a
Ray cluster of two nodes, each in its own mount namespace with token auth, that sees none of the
client's files. The client (its own HOME and folders) uploads, submits, follows and fetches
through the real CLI; a node is SIGKILLed mid-run.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from napari_raysam.core.cluster import ClusterProfile, connect
from napari_raysam.core.dataset import SampleInput, write_dataset
from napari_raysam.core.dataset.synthetic import make_samples
from napari_raysam.core.storage import StorageError
from remote_cluster import Client, IsolatedNode, S3Server, node_env

pytestmark = pytest.mark.ray
TRAIN = ["--model", "tiny", "--mode", "decoder", "--workers", "2", "--epochs", "5",
         "--steps-per-epoch", "6", "--correction-rounds", "1", "--lr", "3e-3"]


class Cluster:
    """A head and one worker node (1 CPU each: a 2-worker run puts one worker on each)."""

    def __init__(self, workdir: Path, s3: S3Server):
        self.workdir, self.token = workdir, secrets.token_urlsafe(24)
        self.env = node_env(self.token, s3.env("rw"))
        self.head = IsolatedNode(workdir, self.env)
        self.workers: list[IsolatedNode] = []
        try:
            self.head.wait_nodes(1)
            self.add_worker()
        except BaseException:
            self.stop()
            raise

    def add_worker(self, attempts: int = 3) -> IsolatedNode:
        """Start a worker node (fresh ports, its own namespace) and wait until the head sees
        it. A node that exits or never registers (seen once on a loaded CI machine) is stopped
        and replaced, so one bad start does not take the module's later tests with it."""
        errors = []
        for _ in range(attempts):
            expected = 2 + sum(w.proc.poll() is None for w in self.workers)
            node = IsolatedNode(self.workdir, self.env, gcs_address=self.head.gcs_address)
            self.workers.append(node)
            try:
                self.head.wait_nodes(expected, timeout=90, joining=node)
                return node
            except RuntimeError as e:
                errors.append(str(e))
                node.stop()
        raise RuntimeError("no worker node joined:\n" + "\n---\n".join(errors))

    def kill_worker(self) -> None:
        """SIGKILL the live worker node (raylet, workers and all) and wait until the head
        has noticed."""
        node = next(w for w in self.workers if w.proc.poll() is None)
        node.stop()
        deadline = time.monotonic() + 60
        while len(self.head.alive_nodes()) != 1 and time.monotonic() < deadline:
            time.sleep(0.5)

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            node.stop()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(s3, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("nodes"), s3)
    yield c
    c.stop()


@pytest.fixture
def client_env(tmp_path, s3, cluster):
    """The client's environment: its own HOME and folders (conftest), S3 keys, the token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(s3.env("rw"), HOME=str(tmp_path / "client-home"), RAYSAM_TOKEN=cluster.token,
               PYTHONUNBUFFERED="1")
    Path(env["HOME"]).mkdir()
    return env


@pytest.fixture
def training_set(tmp_path):
    samples = make_samples(4, style="round", seed=11)
    return write_dataset(tmp_path / "my set", [SampleInput(s.image, s.labels, f"img{i}")
                                               for i, s in enumerate(samples)],
                         val_fraction=0.25, seed=3)


def _submit(client_env, cluster, s3, training_set, *extra) -> Client:
    return Client(client_env, "submit", str(training_set.path), "--address",
                  cluster.head.address, "--token-env", "RAYSAM_TOKEN", "--storage",
                  s3.uri("store"), *TRAIN, *extra, "--json")


def _kill_worker_after_epoch(client: Client, cluster: Cluster, epoch: int,
                             s3: S3Server | None = None) -> None:
    """SIGKILL the worker node once rank 0 has reported ``epoch``; with ``s3``, only once Ray's
    controller has registered a checkpoint (it writes its snapshot to the run's folder then)."""
    client.wait_for(lambda e: e.get("event") == "epoch" and e.get("epoch") == epoch,
                    timeout=600)
    if s3 is not None:
        run = next(e["run"] for e in client.events() if e.get("event") == "submitted")
        snapshot = f"store/runs/{run}/checkpoint_manager_snapshot.json"
        deadline = time.monotonic() + 60
        while snapshot not in s3.keys_under(f"store/runs/{run}/"):
            assert time.monotonic() < deadline, f"Ray never wrote {snapshot}"
            time.sleep(0.2)
    nodes = cluster.head.train_worker_nodes()
    assert len(nodes) == 2 and len(set(nodes)) == 2, nodes  # one worker on each node
    cluster.kill_worker()


def _assert_no_secrets(text: str, cluster: Cluster, s3: S3Server) -> None:
    for secret in (cluster.token, s3.keys["rw"][1]):
        assert secret not in text


def test_remote_run_over_s3_resumes_after_a_lost_node(s3, cluster, client_env, training_set):
    # ray.train.report returns before Ray's controller has taken the result (it polls every
    # 2 s and registers a checkpoint once every rank's report is in), so a node lost right after
    # the epoch-1 event can restart the run from scratch (seen on CI). The kill waits for the
    # controller's checkpoint snapshot; 8 epochs leave time for that wait.
    client = _submit(client_env, cluster, s3, training_set, "--epochs", "8")
    _kill_worker_after_epoch(client, cluster, 2, s3)
    cluster.add_worker()  # a fresh node (its own namespace) replaces the lost one
    code = client.finish(timeout=900)
    assert code == 0, client.text[-5000:]
    events = client.events()
    run = next(e["run"] for e in events if e.get("event") == "submitted")
    assert [e["epoch"] for e in events if e.get("event") == "epoch"] == list(range(1, 9))
    resumed = [e for e in events if e.get("event") == "resume"]
    assert resumed and resumed[0]["from_epoch"] >= 2, client.text[-3000:]
    fetched = next(e for e in events if e.get("event") == "fetched")

    # the model is in the client's store and loads (weights_only) as run:NAME
    from napari_raysam.core.runs.records import RunIndex
    from napari_raysam.core.sam.models import load_model

    model = load_model(f"run:{run}", device="cpu")
    assert model.model_type == "tiny" and Path(fetched["path"]).is_file()
    assert [m["epoch"] for m in model.lineage["metrics"]] == list(range(1, 9))

    # the bucket holds the training set and the run's outputs, checkpoints and events
    content_hash = training_set.content_hash
    data_keys = [k for k in s3.keys_under(f"store/datasets/{content_hash}/")  # no folder
                 if not k.endswith(("/", ".sha256"))]  # markers, no sha256 sidecars
    assert f"store/datasets/{content_hash}/manifest.json" in data_keys
    assert len(data_keys) == 1 + 2 * len(training_set.samples)
    run_keys = s3.keys_under(f"store/runs/{run}/")
    for name in ("model.pt", "report.json", "curves.png", "run.json"):
        assert f"store/runs/{run}/{name}" in run_keys
    assert any("/checkpoint_epoch_" in k for k in run_keys)
    assert sum("/events/" in k for k in run_keys) >= 11  # start, baseline, 8 epochs, resume, end

    # neither the token nor the S3 secret in the output, the run index or the job's entrypoint
    from ray.job_submission import JobSubmissionClient

    info = JobSubmissionClient(cluster.head.address, headers=cluster.head.headers) \
        .get_job_info(run)
    assert "s3://raysam/store/datasets/" in info.entrypoint
    index_text = RunIndex().path.read_text()
    for text in (client.text, index_text, info.entrypoint, json.dumps(info.metadata),
                 json.dumps(info.runtime_env, default=str)):
        _assert_no_secrets(text, cluster, s3)


def test_remote_run_without_retries_fails_and_its_checkpoint_comes_back(
        s3, cluster, client_env, training_set):
    client = _submit(client_env, cluster, s3, training_set, "--max-failures", "0")
    try:
        _kill_worker_after_epoch(client, cluster, 1)
        code = client.finish(timeout=600)
    finally:
        cluster.add_worker()
    assert code != 0
    run = next(e["run"] for e in client.events() if e.get("event") == "submitted")
    status = [e for e in client.events() if e.get("event") == "status"]
    assert status[-1]["status"] == "FAILED", client.text[-3000:]
    assert "log_tail" in status[-1]
    fetch = subprocess.run([sys.executable, "-m", "napari_raysam.cli", "runs", "fetch", run,
                            "--partial", "--json"], env=client_env, capture_output=True,
                           text=True, timeout=300)
    assert fetch.returncode == 0, fetch.stdout + fetch.stderr
    got = json.loads(fetch.stdout.strip().splitlines()[-1])
    assert got["partial"] and got["epoch"] >= 1 and got["name"].startswith(f"{run}.partial-")
    from napari_raysam.core.sam.models import load_model

    model = load_model(f"run:{got['name']}", device="cpu")
    assert model.lineage["partial"] and model.lineage["epoch"] == got["epoch"]
    _assert_no_secrets(client.text + fetch.stdout + fetch.stderr, cluster, s3)


def test_cluster_check_reports_both_sides(s3, cluster, client_env):
    out = subprocess.run([sys.executable, "-m", "napari_raysam.cli", "cluster", "check",
                          "--address", cluster.head.address, "--token-env", "RAYSAM_TOKEN",
                          "--storage", s3.uri("store")], env=client_env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "storage reachable from both sides" in out.stdout
    assert "cluster torch 2." in out.stdout and "2 node(s)" in out.stdout
    _assert_no_secrets(out.stdout + out.stderr, cluster, s3)


# --- preflight: each failure named, before any upload -------------------------------------


def _profile(cluster, uri: str) -> ClusterProfile:
    return ClusterProfile(name="remote", address=cluster.head.address, token_env="RAYSAM_TOKEN",
                          storage=uri)


@pytest.mark.parametrize("case,match", [
    ("missing bucket", "bucket that does not exist"),
    ("wrong credentials", "refused the credentials"),
    ("read-only credentials", "does not allow writing"),
    ("unreachable endpoint", "is unreachable"),
])
def test_preflight_failures_on_this_computer(s3, cluster, monkeypatch, training_set, case,
                                             match):
    from napari_raysam.core.cluster.local_head import free_ports
    from napari_raysam.core.runs import submit

    user = {"wrong credentials": "bad", "read-only credentials": "ro"}.get(case, "rw")
    for k, v in s3.env(user).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("RAYSAM_TOKEN", cluster.token)
    uri = s3.uri(f"pre-{secrets.token_hex(3)}",
                 bucket="nobucket" if case == "missing bucket" else "raysam",
                 port=free_ports(1)[0][0] if case == "unreachable endpoint" else None)
    profile = _profile(cluster, uri)
    with pytest.raises(StorageError, match=match) as err:
        connect(profile)
    assert "this computer" in str(err.value)
    prefix = uri.split("/", 3)[3].split("?")[0]
    jobs_before = len(_jobs(cluster))
    with pytest.raises(StorageError, match=match):
        submit(profile, training_set.path, {"model": "tiny"})
    assert s3.keys_under(prefix) == []  # nothing uploaded
    assert len(_jobs(cluster)) == jobs_before  # nothing submitted
    assert s3.keys["ro"][1] not in str(err.value) and cluster.token not in str(err.value)


def _jobs(cluster) -> list:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(cluster.head.address, headers=cluster.head.headers).list_jobs()


def test_preflight_names_the_cluster_when_only_the_cluster_fails(s3, tmp_path, monkeypatch,
                                                                 training_set):
    """A head whose own S3 credentials are wrong: this computer can write, the cluster not."""
    token = secrets.token_urlsafe(16)
    head = IsolatedNode(tmp_path, node_env(token, s3.env("bad")))
    try:
        head.wait_nodes(1)
        for k, v in s3.env("rw").items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("RAYSAM_TOKEN", token)
        profile = ClusterProfile(name="remote", address=head.address, token_env="RAYSAM_TOKEN",
                                 storage=s3.uri("store-cluster-side"))
        with pytest.raises(StorageError) as err:
            connect(profile)
        text = str(err.value)
        assert "The cluster cannot use the storage" in text and "as seen from the cluster" in text
        assert "refused the credentials" in text and "This computer can" in text
        assert s3.keys_under("store-cluster-side/datasets") == []
    finally:
        head.stop()


def test_train_dock_with_a_saved_s3_profile(qtbot, make_napari_viewer, s3, cluster, monkeypatch,
                                            training_set):
    """The Train dock as a user meets it: opened through napari, a profile typed and saved,
    Connect (both sides checked), Start, and the model comes back into the store."""
    from qtpy.QtCore import Qt

    from napari_raysam.core.cluster import ProfileStore

    for k, v in s3.env("rw").items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("RAYSAM_TOKEN", cluster.token)
    viewer = make_napari_viewer()
    _, dock = viewer.window.add_plugin_dock_widget("napari-raysam", "Train")
    dock.profile_combo.addItem("facility")
    dock.profile_combo.setCurrentText("facility")
    dock.address_edit.setText(cluster.head.address)
    dock.token_env_edit.setText("RAYSAM_TOKEN")
    dock.storage_edit.setText(s3.uri("dock"))
    qtbot.mouseClick(dock.save_profile_button, Qt.LeftButton)
    saved = ProfileStore().get("facility")
    assert saved.storage == s3.uri("dock") and saved.token_env == "RAYSAM_TOKEN"
    assert cluster.token not in ProfileStore().path.read_text()
    qtbot.mouseClick(dock.connect_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: "both sides" in dock.summary.text(), timeout=180_000)
    dock.dataset_edit.setText(str(training_set.path))
    dock.model_edit.setText("tiny")
    dock.epochs.setValue(2)
    dock.workers_spin.setValue(2)
    qtbot.mouseClick(dock.start_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dock.model is not None or "FAILED" in dock.status.text(),
                    timeout=600_000)
    assert dock.model is not None, dock.status.text() + dock.log_view.toPlainText()[-3000:]
    assert sorted(dock.plot.epochs) == [1, 2]
    assert Path(dock.model.path).is_file()
    assert any(k.endswith("/model.pt") for k in s3.keys_under("dock/runs/"))


def test_apply_on_the_token_auth_head_over_s3(s3, cluster, client_env, tmp_path):
    """`napari-raysam apply` against the isolated head: inputs up to S3, label TIFFs and the
    table back; the same command again segments nothing."""
    import csv

    import numpy as np
    import tifffile

    folder = tmp_path / "images"
    folder.mkdir()
    for i, sample in enumerate(make_samples(2, shape=(128, 128))):
        tifffile.imwrite(folder / f"img{i}.tif", sample.image)

    def apply(out: Path) -> tuple[Client, dict]:
        client = Client(client_env, "apply", str(folder), "--model", "tiny_cells", "--out",
                        str(out), "--address", cluster.head.address, "--token-env",
                        "RAYSAM_TOKEN", "--storage", s3.uri("apply"), "--json")
        assert client.finish(timeout=600) == 0, client.text[-5000:]
        return client, next(e for e in client.events() if e.get("event") == "end")

    first, end = apply(tmp_path / "out")
    assert (end["status"], end["segmented"], end["reused"]) == ("ok", 2, 0), first.text[-3000:]
    with open(tmp_path / "out" / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["image"], r["status"], r["labels"]) for r in rows] == [
        (f"img{i}.tif", "ok", f"img{i}_labels.tif") for i in range(2)]
    for r in rows:
        labels = tifffile.imread(tmp_path / "out" / r["labels"])
        assert labels.shape == (128, 128) and int(r["objects"]) == len(np.unique(labels)) - 1 > 0
    assert len([k for k in s3.keys_under("apply/applied/") if k.endswith(".tif")]) == 2
    again, end = apply(tmp_path / "out2")
    assert (end["segmented"], end["reused"]) == (0, 2)
    assert (tmp_path / "out2" / "table.csv").read_text() == \
        (tmp_path / "out" / "table.csv").read_text()
    _assert_no_secrets(first.text + again.text, cluster, s3)
