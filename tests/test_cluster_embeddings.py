"""Embeddings computed on the cluster ("Compute on cluster"): every plane of a stack encoded by a
job on a real ``ray start --head``, pulled into the local cache under the key this computer
computes, equal to local embeddings, so the Segment dock opens each plane without computing.
Damaged, foreign and mismatched entries are refused and leave nothing in the cache."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_raysam.core.apply.embed import Embedder, entry_dir, write_plane
from napari_raysam.core.apply.table import RESULTS_FILE
from napari_raysam.core.cluster import ClusterProfile, ProfileStore
from napari_raysam.core.dataset.synthetic import make_samples
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.runs.embed import EMBED, pull_embeddings, submit_embed
from napari_raysam.core.runs.follow import follow
from napari_raysam.core.runs.records import RunIndex, RunRecord
from napari_raysam.core.sam import embeddings as emb
from napari_raysam.core.sam import planes
from napari_raysam.core.sam.embeddings import EmbeddingCache, Tiling
from napari_raysam.core.storage import Storage, StorageError

N_PLANES = 20


@pytest.fixture(scope="module")
def tiny_cells():
    from napari_raysam.core.sam.models import load_model

    return load_model("tiny_cells", device="cpu")


def _stack(n: int, size: int = 64) -> np.ndarray:
    return np.stack([s.image for s in make_samples(n, shape=(size, size), seed=3)])


def _no_local_encoding(monkeypatch) -> list:
    """Make computing an embedding here fail loudly; returns the calls that tried."""
    calls: list = []

    def refuse(*_a, **_k):
        calls.append(1)
        raise AssertionError("an embedding was computed on this computer")

    monkeypatch.setattr(emb, "encode", refuse)
    return calls


def test_every_plane_of_a_layer_in_slider_order():
    got = list(planes.all_planes(4, (2, 3, 8, 9), None))
    assert [p.plane_index for p in got] == [(t, z) for t in range(2) for z in range(3)]
    with_channels = list(planes.all_planes(4, (3, 2, 8, 9), 1))  # Z, C, Y, X
    assert [p.plane_index for p in with_channels] == [(0,), (1,), (2,)]
    assert with_channels[1].index[:2] == (1, slice(None)) and with_channels[1].channel_axis == 0
    assert [p.plane_index for p in planes.all_planes(2, (8, 9), None)] == [()]


@pytest.mark.ray
def test_stack_embedded_on_the_cluster_equals_local_and_needs_no_local_compute(
        ray_head, tmp_path, tiny_cells, monkeypatch):
    _, state = ray_head
    stack = _stack(N_PLANES)
    rgbs = list(planes.sam_planes(stack, 3, None, None, tiny_cells))
    profile = ClusterProfile(name="t", address=state.address, storage=str(tmp_path / "st"))
    cache = EmbeddingCache(tmp_path / "cache")
    record = submit_embed(profile, tiny_cells, rgbs, "fp32", cache, workers=2)
    assert record.kind == EMBED and len(record.config["planes"]) == N_PLANES
    events = list(follow(record))
    end = next(e for e in events if e.get("event") == "end")
    assert (end["computed"], end["reused"]) == (N_PLANES, 0)
    assert [e["done"] for e in events if e.get("event") == "progress"][-1] == N_PLANES
    record = RunIndex().get(record.name)
    assert record.state == "SUCCEEDED"
    assert pull_embeddings(record, tiny_cells, cache) == {"pulled": N_PLANES, "present": 0,
                                                          "missing": 0}
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".")]  # no leftovers
    calls = _no_local_encoding(monkeypatch)
    pulled = [cache.get_or_compute(tiny_cells, rgb, precision="fp32") for rgb in rgbs]
    assert calls == []
    monkeypatch.undo()
    local = EmbeddingCache(tmp_path / "local")
    diff = max(float(np.abs(p["features"] - local.get_or_compute(tiny_cells, rgb,
                                                                 precision="fp32")["features"]).max())
               for p, rgb in zip(pulled, rgbs, strict=True))
    print(f"max abs diff, cluster vs local fp32 embeddings: {diff:.2e}")
    assert diff <= 1e-4
    # everything is cached: nothing to submit; a fresh cache gets the entries already in storage
    assert submit_embed(profile, tiny_cells, rgbs, "fp32", cache) is None
    fresh = EmbeddingCache(tmp_path / "fresh")
    again = submit_embed(profile, tiny_cells, rgbs[:3], "fp32", fresh)
    end = next(e for e in follow(again) if e.get("event") == "end")
    assert (end["computed"], end["reused"]) == (0, 3)
    assert pull_embeddings(RunIndex().get(again.name), tiny_cells, fresh)["pulled"] == 3


def test_bad_requests_are_refused_before_anything_runs(tmp_path, tiny_model):
    profile = ClusterProfile(name="t", address="http://127.0.0.1:9", storage=str(tmp_path / "s"))
    rgb = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(RaysamError, match="precision must be one of"):
        submit_embed(profile, tiny_model, [rgb], "fp16")
    with pytest.raises(RaysamError, match="at least 1"):
        submit_embed(profile, tiny_model, [rgb], "fp32", workers=0)
    assert not (tmp_path / "s").exists()
    training = RunRecord(name="run-x", profile="t", address="local", storage=str(tmp_path),
                         dataset_hash="", dataset_uri="", config={}, submitted="")
    with pytest.raises(RaysamError, match="not an embedding run"):
        pull_embeddings(training, tiny_model)


def _embedded(tmp_path: Path, spec: str, rgbs: list[np.ndarray]) -> tuple[Storage, list[dict]]:
    """Entries written to storage by the job's own actor (run in this process), and the
    results rows it returned."""
    uri = str(tmp_path / "st")
    storage = Storage.open(uri)
    storage.check_writable()
    folder = tmp_path / "planes"
    folder.mkdir(exist_ok=True)
    actor = Embedder(spec, uri, "fp32", 1)
    rows = []
    for i, rgb in enumerate(rgbs):
        path = write_plane(folder, i, rgb)
        storage.put_file(path, storage.path("inputs", path.name))
        rows.append(actor.one(path.name, storage.path("inputs", path.name)))
    run = storage.child("runs", "embed-x")
    run.write_bytes(run.path(RESULTS_FILE), json.dumps(rows).encode())
    return storage, rows


def _record(storage: Storage, model, rgbs: list[np.ndarray], name: str = "embed-x"
            ) -> RunRecord:
    """The record submit_embed would write for ``rgbs`` (keys computed here)."""
    keys = [EmbeddingCache(storage.root).key(model, rgb, Tiling.auto(rgb.shape, model.img_size),
                                             "fp32") for rgb in rgbs]
    plan = [{"name": f"plane{i:05d}.tif", "key": k, "shape": list(rgb.shape[:2])}
            for i, (k, rgb) in enumerate(zip(keys, rgbs, strict=True))]
    return RunRecord(name=name, profile="t", address="local", storage=storage.uri,
                     dataset_hash="", dataset_uri="", config={"planes": plan}, submitted="",
                     kind=EMBED, state="SUCCEEDED")


def _assert_clean(cache: EmbeddingCache) -> None:
    assert not cache.root.exists() or not list(cache.root.iterdir()), \
        list(cache.root.iterdir())


def test_tiled_entries_pull_and_damaged_files_are_refused(tmp_path, tiny_model):
    rgb = np.random.default_rng(0).integers(0, 255, (600, 560, 3), dtype=np.uint8)
    assert Tiling.auto(rgb.shape, tiny_model.img_size).tile_shape is not None  # tiled
    storage, rows = _embedded(tmp_path, "tiny", [rgb])
    record = _record(storage, tiny_model, [rgb])
    assert rows[0]["key"] == record.config["planes"][0]["key"]
    cache = EmbeddingCache(tmp_path / "cache")
    assert pull_embeddings(record, tiny_model, cache)["pulled"] == 1
    tiles = cache.get_or_compute(tiny_model, rgb, precision="fp32")["features"]
    expect = EmbeddingCache(tmp_path / "local").get_or_compute(tiny_model, rgb, precision="fp32")
    assert len(list(tiles.keys())) == len(list(expect["features"].keys())) > 1
    np.testing.assert_allclose(tiles["0"][:], expect["features"]["0"][:], atol=1e-4)
    # one damaged chunk in storage: refused, nothing half-written in a fresh cache
    key = rows[0]["key"]
    chunk = max((p for p in (tmp_path / "st" / Path(*entry_dir(key))).rglob("*")
                 if p.is_file() and not p.name.endswith(".sha256")), key=lambda p: p.stat().st_size)
    chunk.write_bytes(b"\0" + chunk.read_bytes()[1:])
    damaged = EmbeddingCache(tmp_path / "damaged")
    with pytest.raises(StorageError, match="damaged"):
        pull_embeddings(record, tiny_model, damaged)
    _assert_clean(damaged)


@pytest.mark.parametrize("dtype", ["<u2", ">u2", ">f8"])
def test_tiled_plane_scaled_per_tile_travels_as_its_channels(tmp_path, tiny_model,
                                                              monkeypatch, dtype):
    """A tiled plane of a min-max model: its tiles are scaled on their own (micro-sam's rule),
    which the whole-image uint8 input cannot reproduce, so the client uploads the plane's
    channels; the job's key is the client's (also for big-endian and float64 pixels, which a
    TIFF round trip turns native) and the pulled tiles are the local ones."""
    from napari_raysam.core.runs.embed import plan_planes

    image = 100 + make_samples(1, shape=(600, 560), seed=4, dtype=np.float32)[0].image * 300
    image[:150, :150] += 30000
    image = image.astype(np.uint16).astype(dtype)
    sam_input = next(planes.sam_planes(image, 2, None, None, tiny_model))
    assert sam_input.source is not None  # tiny: micro-sam's min-max
    cache = EmbeddingCache(tmp_path / "cache")
    folder = tmp_path / "planes"
    folder.mkdir()
    planned, n = plan_planes(tiny_model, [sam_input], cache, "fp32", folder)
    assert n == 1 and planned[0]["name"] == "plane00000.minmax-source.tif"
    storage = Storage.open(str(tmp_path / "st"))
    storage.check_writable()
    path = folder / planned[0]["name"]
    storage.put_file(path, storage.path("inputs", path.name))
    row = Embedder("tiny", storage.uri, "fp32", 1).one(path.name,
                                                      storage.path("inputs", path.name))
    assert row["key"] == planned[0]["key"]
    record = RunRecord(name="embed-x", profile="t", address="local", storage=storage.uri,
                       dataset_hash="", dataset_uri="", config={"planes": planned},
                       submitted="", kind=EMBED, state="SUCCEEDED")
    assert pull_embeddings(record, tiny_model, cache)["pulled"] == 1
    calls = _no_local_encoding(monkeypatch)
    pulled = cache.get_or_compute(tiny_model, sam_input, precision="fp32")["features"]
    assert calls == []
    monkeypatch.undo()
    local = EmbeddingCache(tmp_path / "local").get_or_compute(tiny_model, sam_input,
                                                              precision="fp32")["features"]
    for tile in local.keys():
        np.testing.assert_allclose(pulled[tile][:], local[tile][:], rtol=0, atol=1e-4)


def test_entries_of_other_weights_or_shapes_never_enter_the_cache(tmp_path, tiny_model,
                                                                  tiny_cells):
    rgbs = [np.full((48, 48, 3), v, np.uint8) for v in (40, 200)]
    storage, _ = _embedded(tmp_path, "tiny", rgbs)  # the cluster loaded other weights
    cache = EmbeddingCache(tmp_path / "cache")
    with pytest.raises(RaysamError, match="do not match this computer's"):
        pull_embeddings(_record(storage, tiny_cells, rgbs), tiny_cells, cache)
    _assert_clean(cache)
    # an entry whose layout does not fit the image it is filed under
    record = _record(storage, tiny_model, rgbs)
    record.config["planes"][0]["shape"] = [80, 80]
    with pytest.raises(RaysamError, match="does not fit this image"):
        pull_embeddings(record, tiny_model, cache)
    assert not cache.has(record.config["planes"][0]["key"])
    assert cache.has(record.config["planes"][1]["key"])  # the other plane is still pulled
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".")]
    # a manifest naming a file outside its entry
    cache = EmbeddingCache(tmp_path / "cache2")
    key = record.config["planes"][1]["key"]
    storage.write_bytes(storage.path("embeddings", f"{key}.json"),
                        json.dumps({"files": {"../../evil": "0" * 64}}).encode())
    with pytest.raises(RaysamError, match="outside its folder"):
        pull_embeddings(_record(storage, tiny_model, rgbs[1:2]), tiny_model, cache)
    storage.write_bytes(storage.path("embeddings", f"{key}.json"),  # Windows' separators
                        json.dumps({"files": {"..\\..\\evil": "0" * 64}}).encode())
    with pytest.raises(RaysamError, match="outside its folder"):
        pull_embeddings(_record(storage, tiny_model, rgbs[1:2]), tiny_model, cache)
    assert not cache.has(key)


def test_a_cancelled_run_pulls_what_finished(tmp_path, tiny_model):
    rgbs = [np.full((48, 48, 3), v, np.uint8) for v in (10, 90, 170)]
    storage, _ = _embedded(tmp_path, "tiny", rgbs[:2])  # the third never ran
    record = _record(storage, tiny_model, rgbs)
    record.state = "STOPPED"
    cache = EmbeddingCache(tmp_path / "cache")
    assert pull_embeddings(record, tiny_model, cache) == {"pulled": 2, "present": 0,
                                                          "missing": 1}
    assert pull_embeddings(record, tiny_model, cache) == {"pulled": 0, "present": 2,
                                                          "missing": 1}


def test_segment_dock_without_an_image_says_so(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    dock = viewer.window.add_plugin_dock_widget("napari-raysam", "Segment")[1]
    qtbot.mouseClick(dock.cluster_row.button, Qt.MouseButton.LeftButton)
    assert "No image layer" in dock.status.text()
    assert dock.cluster_row.button.isEnabled()


@pytest.mark.ray
def test_segment_dock_opens_every_plane_after_compute_on_cluster(
        make_napari_viewer, qtbot, ray_head, tmp_path, monkeypatch):
    _, state = ray_head
    ProfileStore().save(ClusterProfile(name="lab", address=state.address,
                                       storage=str(tmp_path / "storage")))
    viewer = make_napari_viewer(show=True)
    viewer.add_image(_stack(N_PLANES), name="stack")
    dock = viewer.window.add_plugin_dock_widget("napari-raysam", "Segment")[1]
    row = dock.cluster_row
    row.profile_combo.refresh()
    row.profile_combo.setCurrentText("lab")
    qtbot.mouseClick(row.button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: row.pulled is not None or "rror" in dock.status.text(),
                    timeout=600_000)
    assert row.pulled == {"pulled": N_PLANES, "present": 0, "missing": 0}, dock.status.text()
    assert f"{N_PLANES} plane embedding(s) pulled" in dock.status.text()
    assert row.button.text() == "Compute on cluster"
    calls = _no_local_encoding(monkeypatch)
    qtbot.mouseClick(dock.embed_button, Qt.MouseButton.LeftButton)
    for z in range(N_PLANES):
        viewer.dims.set_current_step(0, z)
        qtbot.waitUntil(lambda z=z: dock._embedded_for is not None and not dock.busy
                        and dock._embedded_for.plane_index == (z,), timeout=60_000)
        assert dock.embeddings is not None, dock.status.text()
    assert calls == []


def test_storage_refusing_an_entry_stops_the_job_with_the_reason(tmp_path):
    """The cluster cannot write an entry (here a file sits where the embeddings folder goes):
    the actor hands back the reason, which ends the run (core.apply.pool), and leaves no
    manifest, so nothing incomplete is ever pulled."""
    uri = str(tmp_path / "st")
    storage = Storage.open(uri)
    storage.check_writable()
    (tmp_path / "st" / "embeddings").write_text("not a folder")
    path = write_plane(tmp_path, 0, np.full((48, 48, 3), 99, np.uint8))
    storage.put_file(path, storage.path("inputs", path.name))
    actor = Embedder("tiny", uri, "fp32", 1)
    out = actor({"name": [path.name], "path": [storage.path("inputs", path.name)]})
    row = json.loads(out["row"][0])
    assert list(row) == ["failed"]
    assert "Cannot write the embedding of plane00000.tif" in row["failed"]
    assert str(tmp_path / "st") in row["failed"] and "run it again" in row["failed"]
    assert not list(actor.cache.root.iterdir())  # the node's temporary entry is gone


@pytest.mark.parametrize("name, array, why", [
    ("plane00000.tif", np.zeros((40, 40), np.uint16), "must be \\(H, W, 3\\) uint8"),
    ("plane00000.minmax-source.tif", np.zeros((40, 40, 5), np.uint16), "min-max source must be"),
])
def test_a_plane_that_is_not_what_the_client_writes_is_refused(tmp_path, name, array, why):
    """A plane file the client would not write (a raw image named as SAM input, a tile source
    with 5 channels): the job ends with the reason instead of encoding the wrong pixels."""
    import tifffile

    uri = str(tmp_path / "st")
    storage = Storage.open(uri)
    storage.check_writable()
    tifffile.imwrite(tmp_path / name, array)
    storage.put_file(tmp_path / name, storage.path("inputs", name))
    out = Embedder("tiny", uri, "fp32", 1)({"name": [name],
                                            "path": [storage.path("inputs", name)]})
    reason = json.loads(out["row"][0])["failed"]
    assert f"Cannot read the plane {name}" in reason
    assert re.search(why, reason) and "Compute on cluster again" in reason
