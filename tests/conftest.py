"""Shared fixtures: every test writes caches, settings and models under its own temp folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_RAYSAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NAPARI_RAYSAM_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("NAPARI_RAYSAM_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MICROSAM_CACHEDIR", str(tmp_path / "microsam"))


@pytest.fixture(scope="session")
def tiny_model():
    from napari_raysam.core.models import load_model

    return load_model("tiny", device="cpu")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """One real ``ray start --head`` on 127.0.0.1 per test module, stopped by its own PID."""
    from napari_raysam.core.local_head import LocalHead

    head = LocalHead(state_file=tmp_path_factory.mktemp("head") / "head.json", num_cpus=2)
    try:
        yield head, head.start()
    finally:
        head.stop()
