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


@pytest.fixture
def dock(make_napari_viewer, tmp_path):
    """The Segment dock (tiny model) on a synthetic 160x192 'cells' image, as (viewer, widget);
    ``widget.sample`` holds the image's ground truth. A module's own ``dock`` overrides it."""
    from napari_raysam._qt.segment_widget import SegmentWidget
    from napari_raysam.core.dataset.synthetic import make_sample
    from napari_raysam.core.sam.embeddings import EmbeddingCache

    viewer = make_napari_viewer()
    sample = make_sample((160, 192), seed=4)
    viewer.add_image(sample.image, name="cells")
    widget = SegmentWidget(viewer, cache=EmbeddingCache(tmp_path / "emb"))
    widget.model_combo.setCurrentText("tiny")  # random weights, seed 0 (tests rely on it)
    viewer.window.add_dock_widget(widget)
    widget.sample = sample
    return viewer, widget


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """One real ``ray start --head`` on 127.0.0.1 per test module, stopped by its own PID."""
    from napari_raysam.core.cluster.local_head import LocalHead

    head = LocalHead(state_file=tmp_path_factory.mktemp("head") / "head.json", num_cpus=2)
    try:
        yield head, head.start()
    finally:
        head.stop()
