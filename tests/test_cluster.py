"""Cluster profiles and validation (no Ray), plus connect against real heads: a token-auth
head started through LocalHead, a plain HTTP server that is not Ray, and a closed port."""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port, serve_directory
from napari_raysam.core.cluster import (
    ClusterError,
    ClusterProfile,
    ProfileStore,
    connect,
    validate_address,
    validate_token,
)
from napari_raysam.core.cluster.connection import probe
from napari_raysam.core.cluster.local_head import LocalHead


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    out = {k: tmp_path / k for k in ("config", "data", "cache")}
    monkeypatch.setenv("NAPARI_RAYSAM_CONFIG", str(out["config"]))
    monkeypatch.setenv("NAPARI_RAYSAM_DATA", str(out["data"]))
    monkeypatch.setenv("NAPARI_RAYSAM_CACHE", str(out["cache"]))
    return out


@pytest.mark.parametrize("address,expected", [
    ("local", "local"), ("http://head:8265", "http://head:8265"),
    ("https://ray.example.org/", "https://ray.example.org"),
    ("http://[::1]:8265", "http://[::1]:8265"), (" http://10.0.0.5:8265 ", "http://10.0.0.5:8265"),
])
def test_valid_addresses(address, expected):
    assert validate_address(address) == expected


@pytest.mark.parametrize("address,match", [
    ("htp://head:8265", "scheme 'htp'"), (":8265", "port but no host"),
    ("head:8265", "no scheme"), ("ray://head:10001", "Ray Client"), ("", "empty"),
    ("http://head:99999", "port"), ("http://:8265", "no host"),
    ("http://head:8265/api", "extra parts"), ("http://user@head:8265", "extra parts"),
])
def test_invalid_addresses(address, match):
    with pytest.raises(ClusterError, match=match):
        validate_address(address)


@pytest.mark.parametrize("address,match", [
    ("http://alice:hunter2pw@head:8265", "user name or password"),
    ("https://alice:hunter2pw@head", "user name or password"),
    ("http://alice:hunter2pw@head:99999", "user name or password"),
    ("http://alice:hunter2pw@head:8265/api", "user name or password"),
    ("http://alice:hunt/er2pw@head:8265", "user name or password"),  # '/' in the password
    ("http://alice:hunter2pw#x@head:8265", "user name or password"),  # '#' in the password
    ("alice:hunter2pw@head:8265", "no scheme; write http://head:8265 "),
    ("ray://alice:hunter2pw@head:10001", "Ray Client"),
    ("ftp://alice:hunter2pw@head", "scheme 'ftp'"),
    ("http://alice:hunter2pw@:8265", "user name or password"),
    (":hunter2pw@head:8265", "port but no host"),
])
def test_a_password_in_the_address_is_never_repeated(address, match):
    with pytest.raises(ClusterError, match=match) as info:
        validate_address(address)
    text = str(info.value)
    assert "hunt" not in text and "er2pw" not in text and "alice" not in text, text


@pytest.mark.parametrize("token", ["abc def", "abc\n", "\tabc", ""])
def test_bad_tokens_are_refused_without_echoing_them(token):
    with pytest.raises(ClusterError) as info:
        validate_token(token, "$TOK")
    assert ("whitespace" in str(info.value)) or ("empty" in str(info.value))
    if token.strip():
        assert token.strip() not in str(info.value)


def test_profiles_persist_without_tokens(dirs, monkeypatch):
    monkeypatch.setenv("MY_RAY_TOKEN", "s3cr3t-value")
    store = ProfileStore()
    assert [p.name for p in store.list()] == ["local"]
    remote = ClusterProfile(name="lab", address="http://[::1]:8265", token_env="MY_RAY_TOKEN",
                            storage="s3://bucket/raysam", gpus_per_worker=1)
    store.save(remote)
    again = ProfileStore().get("lab")
    assert again == remote and again.token() == "s3cr3t-value"
    assert "s3cr3t" not in (dirs["config"] / "profiles.json").read_text()
    assert oct((dirs["config"] / "profiles.json").stat().st_mode & 0o777) == "0o600"
    store.delete("lab")
    with pytest.raises(ClusterError, match="No cluster profile named 'lab'"):
        store.get("lab")


def test_profile_validation_messages(dirs, monkeypatch):
    with pytest.raises(ClusterError, match="needs a storage URI"):
        ClusterProfile(name="r", address="http://h:8265").validate()
    with pytest.raises(ClusterError, match="not an environment variable name"):
        ClusterProfile(token_env="abc.def-123").validate()
    with pytest.raises(Exception, match="not supported"):
        ClusterProfile(name="r", address="http://h:8265", storage="ftp://x/y").validate()
    with pytest.raises(ClusterError, match="is not set"):
        ClusterProfile(token_env="NO_SUCH_VAR_RAYSAM").token()
    monkeypatch.setenv("SPACEY", "tok en")
    with pytest.raises(ClusterError, match="whitespace"):
        ClusterProfile(token_env="SPACEY").token()
    assert ClusterProfile().storage_uri() == str(dirs["cache"] / "runs")


def test_unreachable_address_fails_fast():
    t = time.monotonic()
    with pytest.raises(ClusterError, match="Cannot reach"):
        probe(f"http://127.0.0.1:{free_port()}", {}, timeout=2)
    assert time.monotonic() - t < 3


def test_a_web_server_that_is_not_ray(web_server):
    with pytest.raises(ClusterError, match="not a Ray dashboard"):
        probe(web_server, {}, timeout=3)


def test_a_dashboard_without_jobs_api(tmp_path):
    """A head that answers /api/version like Ray but has no /api/jobs/ (Ray without the
    dashboard's job module, e.g. a minimal install): named, with the fix, before any upload."""
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "version").write_text('{"ray_version": "2.60.0", "version": "4"}')
    with serve_directory(tmp_path) as url:
        with pytest.raises(ClusterError, match=r"no working Jobs API \(HTTP 404\).*ray\[default\]"):
            probe(url, {}, timeout=3)
        profile = ClusterProfile(name="nojobs", address=url, storage=str(tmp_path / "store"))
        with pytest.raises(ClusterError, match="no working Jobs API"):
            connect(profile, timeout=3)
    assert not (tmp_path / "store").exists()


TOKEN = "rstest" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def token_head(tmp_path_factory):
    head = LocalHead(state_file=tmp_path_factory.mktemp("tokhead") / "head.json", num_cpus=2)
    try:
        yield head.start(token=TOKEN)
        assert TOKEN not in head.state_file.read_text()
    finally:
        head.stop()


@pytest.mark.ray
def test_token_auth_connect_submit_cancel_and_no_token_leaks(token_head, dirs, monkeypatch,
                                                             tmp_path):
    from napari_raysam.core import runs
    from napari_raysam.core.dataset import SampleInput, write_dataset
    from napari_raysam.core.dataset.synthetic import make_samples

    monkeypatch.setenv("RS_TOKEN", TOKEN)
    monkeypatch.setenv("RS_WRONG", "wrong" + TOKEN[5:-3])
    storage = str(dirs["cache"] / "shared storage")
    good = ClusterProfile(name="tok", address=token_head.address, token_env="RS_TOKEN",
                          storage=storage)
    summary = connect(good)
    assert summary.nodes == 1 and summary.cpus == 2 and summary.ray_version == "2.60.0"
    assert summary.python_version == ".".join(map(str, sys.version_info[:3]))
    for env, match in ((None, "requires an auth token"), ("RS_WRONG", "refused the auth token")):
        bad = ClusterProfile(name="tok", address=token_head.address, token_env=env,
                             storage=storage)
        t = time.monotonic()
        with pytest.raises(ClusterError, match=match) as info:
            connect(bad)
        assert time.monotonic() - t < 5 and TOKEN not in str(info.value)
    blocked = ClusterProfile(name="tok", address=token_head.address, token_env="RS_TOKEN",
                             storage=str(tmp_path / "missing"))
    (tmp_path / "missing").write_text("a file, not a folder")
    with pytest.raises(Exception, match="Cannot write"):
        connect(blocked)

    ProfileStore().save(good)
    samples = make_samples(4, shape=(128, 128))
    ts = write_dataset(tmp_path / "set", [SampleInput(s.image, s.labels, f"i{i}")
                                          for i, s in enumerate(samples)])
    record = runs.submit(good, ts.path, {"epochs": 1, "workers": 1})
    seen = []
    for event in runs.follow(record):
        seen.append(event)
        if event.get("event") == "status" and event["status"] == "RUNNING":
            break
    final = runs.cancel(record)
    assert final.state in ("STOPPED", "SUCCEEDED", "FAILED") and final.cancelled
    written = [p for d in dirs.values() for p in Path(d).rglob("*") if p.is_file()]
    assert len(written) > 10  # profiles, run index, uploaded set, run folder...
    assert not [p for p in written if _contains(p, TOKEN)]


def _contains(path: Path, needle: str) -> bool:
    try:
        return needle.encode() in path.read_bytes()
    except OSError:
        return False
