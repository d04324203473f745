"""Shared fixtures: every test writes caches, settings and models under its own temp folder."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_directory(directory: Path):
    """A plain HTTP server for ``directory`` on loopback; yields its URL, stopped by its PID."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                             "127.0.0.1", "--directory", str(directory)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def web_server(tmp_path_factory):
    """A reachable HTTP server on loopback that is not a Ray dashboard."""
    with serve_directory(tmp_path_factory.mktemp("www")) as url:
        yield url


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_RAYSAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NAPARI_RAYSAM_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("NAPARI_RAYSAM_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MICROSAM_CACHEDIR", str(tmp_path / "microsam"))


@pytest.fixture(scope="session")
def tiny_model():
    from napari_raysam.core.sam.models import load_model

    return load_model("tiny", device="cpu")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """One real ``ray start --head`` on 127.0.0.1 per test module, stopped by its own PID."""
    from napari_raysam.core.cluster.local_head import LocalHead

    head = LocalHead(state_file=tmp_path_factory.mktemp("head") / "head.json", num_cpus=2)
    try:
        yield head, head.start()
    finally:
        head.stop()
