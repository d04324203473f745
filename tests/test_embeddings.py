import errno

import numpy as np
import pytest

from hardware_helpers import expected_auto_label
from napari_raysam.core.dataset.synthetic import make_sample
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.images import to_sam_rgb
from napari_raysam.core.sam import segment
from napari_raysam.core.sam.embeddings import EmbeddingCache, Tiling
from napari_raysam.core.sam.models import load_model


class EncoderCalls:
    """Counts image-encoder passes of a model (at its patch embedding, which both the module's
    forward and our fused pass run once per image)."""

    def __init__(self, model):
        self.n = 0
        self.handle = model.sam.image_encoder.patch_embed.register_forward_hook(self._hook)

    def _hook(self, *args):
        self.n += 1


@pytest.fixture
def rgb():
    return to_sam_rgb(make_sample((200, 240), seed=3).image)


def test_cache_hit_computes_nothing(tmp_path, tiny_model, rgb):
    cache = EmbeddingCache(tmp_path / "c")
    calls = EncoderCalls(tiny_model)
    first = cache.get_or_compute(tiny_model, rgb, precision="fp32")
    assert calls.n == 1
    again = EmbeddingCache(tmp_path / "c").get_or_compute(tiny_model, rgb, precision="fp32")
    assert calls.n == 1  # reopened from disk: no encoder pass
    np.testing.assert_array_equal(first["features"], again["features"])
    assert list(again["original_size"]) == [200, 240]
    assert len(cache.entries()) == 1 and cache.size_bytes() > 0
    calls.handle.remove()


def test_other_encoder_or_pixels_never_reuse(tmp_path, tiny_model, rgb):
    cache = EmbeddingCache(tmp_path)
    cache.get_or_compute(tiny_model, rgb, precision="fp32")
    other = load_model("tiny:7", device="cpu")
    calls = EncoderCalls(other)
    cache.get_or_compute(other, rgb, precision="fp32")
    assert calls.n == 1
    changed = rgb.copy()
    changed[0, 0, 0] ^= 1
    cache.get_or_compute(other, changed, precision="fp32")
    assert calls.n == 2 and len(cache.entries()) == 3


def test_large_image_is_tiled_with_halo_and_segments(tmp_path, tiny_model):
    sample = make_sample((1100, 1300), seed=5)
    rgb = to_sam_rgb(sample.image)
    tiling = Tiling.auto(rgb.shape, tiny_model.img_size)
    assert tiling.tile_shape is not None and tiling.halo[0] > 0
    cache = EmbeddingCache(tmp_path)
    calls = EncoderCalls(tiny_model)
    emb = cache.get_or_compute(tiny_model, rgb, precision="fp32")
    assert emb["input_size"] is None and calls.n > 1
    ids, counts = np.unique(sample.labels, return_counts=True)
    target = ids[1:][np.argmax(counts[1:])]
    rows, cols = np.nonzero(sample.labels == target)
    mask = segment.segment(tiny_model, emb, [[rows.mean(), cols.mean()]], [1])
    assert mask.shape == (1100, 1300)
    n = calls.n
    cache.get_or_compute(tiny_model, rgb, precision="fp32")
    assert calls.n == n


def test_4096_image_works_through_tiling(tmp_path, tiny_model):
    rgb = np.zeros((4096, 4096, 3), np.uint8)
    rgb[1000:1100, 3000:3100] = 200
    tiling = Tiling((1024, 1024), (64, 64))  # 16 tiles; the auto tiles are for real models
    emb = EmbeddingCache(tmp_path).get_or_compute(tiny_model, rgb, tiling, precision="fp32")
    assert len(emb["features"]) == 16
    mask = segment.segment(tiny_model, emb, box=[990, 2990, 1110, 3110])
    assert mask.shape == (4096, 4096)


def test_disk_full_leaves_no_entry(tmp_path, tiny_model, rgb, monkeypatch):
    import zarr

    real = zarr.Group.create_array

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zarr.Group, "create_array", full)
    cache = EmbeddingCache(tmp_path)
    with pytest.raises(RaysamError, match="No disk space"):
        cache.get_or_compute(tiny_model, rgb, precision="fp32")
    assert cache.entries() == [] and not list(tmp_path.glob(".*"))
    monkeypatch.setattr(zarr.Group, "create_array", real)
    assert cache.get_or_compute(tiny_model, rgb, precision="fp32")["features"].shape[0] == 1


def test_damaged_entry_is_recomputed(tmp_path, tiny_model, rgb):
    cache = EmbeddingCache(tmp_path)
    cache.get_or_compute(tiny_model, rgb, precision="fp32")
    (entry,) = cache.entries()
    for f in entry.rglob("*"):
        if f.is_file() and "features" in str(f.relative_to(entry)):
            f.write_bytes(b"garbage")
    calls = EncoderCalls(tiny_model)
    emb = cache.get_or_compute(tiny_model, rgb, precision="fp32")
    assert calls.n == 1 and emb["features"].shape[0] == 1


def test_clear_and_cache_location_override(tmp_path, tiny_model, rgb):
    cache = EmbeddingCache()  # conftest points NAPARI_RAYSAM_CACHE at a temp folder
    assert str(cache.root).startswith(str(tmp_path))
    cache.get_or_compute(tiny_model, rgb, precision="fp32")
    assert cache.clear() > 0 and cache.entries() == [] and cache.size_bytes() == 0


def test_bf16_close_to_fp32(tmp_path, tiny_model, rgb):
    cache = EmbeddingCache(tmp_path)
    fp32 = cache.get_or_compute(tiny_model, rgb, precision="fp32")["features"]
    bf16 = cache.get_or_compute(tiny_model, rgb, precision="bf16")["features"]
    rel = np.abs(fp32 - bf16).mean() / np.abs(fp32).mean()
    assert 0 < rel < 0.05
    assert len(cache.entries()) == 2  # precision is part of the key: two entries, no mix-up
    auto = cache.get_or_compute(tiny_model, rgb, precision="auto")["features"]
    expected = bf16 if expected_auto_label("cpu").startswith("bf16") else fp32
    assert len(cache.entries()) == 2 and np.array_equal(auto, expected)  # auto = its choice


def _pickle_bomb(entry, marker):
    """A zarr v2 object array whose chunk unpickles to ``touch marker`` if anything decodes it."""
    import json
    import pickle
    import shutil

    class Bomb:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    features = entry / "features"
    shutil.rmtree(features)
    features.mkdir()
    (features / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": [1], "chunks": [1], "dtype": "|O", "compressor": None,
        "fill_value": 0, "filters": [{"id": "pickle"}], "order": "C"}))
    (features / "0").write_bytes(pickle.dumps(np.array([Bomb()], dtype=object)))


def _huge_shape(entry, marker):
    """Metadata that claims 10^12 floats (reading it would exhaust memory)."""
    import json

    meta = entry / "features" / "zarr.json"
    data = json.loads(meta.read_text())
    data["shape"] = [1, 256, 1_000_000, 1_000_000]
    data["chunk_grid"]["configuration"]["chunk_shape"] = [1, 256, 1000, 1000]
    meta.write_text(json.dumps(data))


def _bad_sizes(entry, marker):
    import json

    meta = entry / "zarr.json"
    data = json.loads(meta.read_text())
    data["attributes"]["original_size"] = ["../../etc", -1]
    meta.write_text(json.dumps(data))


def _symlink_elsewhere(entry, marker):
    import shutil

    outside = marker.parent / "outside.zarr"
    shutil.copytree(entry, outside)
    shutil.rmtree(entry)
    entry.symlink_to(outside, target_is_directory=True)


@pytest.mark.parametrize("attack", [_pickle_bomb, _huge_shape, _bad_sizes, _symlink_elsewhere],
                         ids=["pickle-object-array", "huge-declared-shape", "bad-size-attrs",
                              "symlink-to-outside"])
def test_hostile_cache_entry_is_never_trusted(tmp_path, tiny_model, rgb, attack):
    """Someone with write access to a shared cache plants an entry under the right key: it is
    refused from its metadata (nothing unpickled, nothing huge allocated, nothing outside the
    cache touched) and the embedding is recomputed."""
    cache = EmbeddingCache(tmp_path / "cache")
    good = cache.get_or_compute(tiny_model, rgb, precision="fp32")
    (entry,) = cache.entries()
    marker = tmp_path / "executed"
    attack(entry, marker)
    outside = sorted(p.name for p in tmp_path.iterdir())
    calls = EncoderCalls(tiny_model)
    emb = cache.get_or_compute(tiny_model, rgb, precision="fp32")
    assert calls.n == 1  # recomputed, not read
    np.testing.assert_array_equal(emb["features"], good["features"])
    assert emb["original_size"] == [200, 240]
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == outside  # nothing outside touched
    assert entry.is_dir() and not entry.is_symlink()
    assert cache.get_or_compute(tiny_model, rgb, precision="fp32")["original_size"] == [200, 240]


def test_hostile_tiled_entry_is_recomputed(tmp_path, tiny_model):
    import json

    big = to_sam_rgb(make_sample((300, 300), seed=4).image)
    tiling = Tiling((128, 128), (16, 16))
    cache = EmbeddingCache(tmp_path)
    cache.get_or_compute(tiny_model, big, tiling, precision="fp32")
    (entry,) = cache.entries()
    meta = entry / "features" / "3" / "zarr.json"
    data = json.loads(meta.read_text())
    data["shape"][-1] = 10_000_000
    meta.write_text(json.dumps(data))
    calls = EncoderCalls(tiny_model)
    emb = cache.get_or_compute(tiny_model, big, tiling, precision="fp32")
    assert calls.n == 9 and emb["features"]["3"].shape[-1] != 10_000_000


def test_embeddings_equal_micro_sams_for_a_micro_sam_normalised_model(tmp_path):
    """For a model with micro-sam's normalisation (the default) the pixels reaching the encoder
    are micro-sam's, and our (fused) encoder pass agrees with
    ``micro_sam.util.precompute_image_embeddings`` within 1e-4 (trained tiny_cells weights in a
    checkpoint that records min-max; micro-sam accepts the tiny architecture). A model of ours
    trained with percentile scaling (tiny_cells as shipped) sees other pixels, on purpose."""
    from micro_sam.util import _to_image, precompute_image_embeddings
    from segment_anything import SamPredictor

    from napari_raysam.core.images import ImagePolicy
    from napari_raysam.core.sam.models import save_checkpoint

    shipped = load_model("tiny_cells", device="cpu")
    path = save_checkpoint(tmp_path / "mm.pt", shipped.sam, "tiny", shipped.tiny_config,
                           normalisation=ImagePolicy().normalisation())
    model = load_model(str(path), device="cpu")
    image = (100 + make_sample((200, 240), seed=3, dtype=np.float32).image * 1500)
    image = image.astype(np.uint16)
    rgb = to_sam_rgb(image, model.image_policy())
    np.testing.assert_array_equal(rgb, _to_image(image))
    ours = EmbeddingCache(tmp_path / "c").get_or_compute(model, rgb, precision="fp32")
    theirs = precompute_image_embeddings(SamPredictor(model.sam), image, verbose=False)
    assert list(ours["input_size"]) == list(theirs["input_size"])
    assert list(ours["original_size"]) == list(theirs["original_size"])
    np.testing.assert_allclose(ours["features"], theirs["features"], rtol=0, atol=1e-4)
    assert float(np.abs(theirs["features"]).max()) > 0.5  # not trivially small features
    assert not np.array_equal(to_sam_rgb(image, shipped.image_policy()), rgb)


def test_tiled_embeddings_equal_micro_sams_scaled_per_tile(tmp_path):
    """A tiled uint16 image with a bright corner: micro-sam scales each tile on its own
    (``_to_image`` per tile), so do we (``to_sam_input``): every tile's pixels equal its, and
    every tile's features agree with ``precompute_image_embeddings`` within 1e-4. Tiles cut
    from the whole-image scaling (a bare rgb) would not: the dim tiles get a few grey levels."""
    from bioimage_cpp.utils import Blocking
    from micro_sam.util import _to_image, precompute_image_embeddings
    from segment_anything import SamPredictor

    from napari_raysam.core.images import ImagePolicy, to_sam_input
    from napari_raysam.core.sam.models import save_checkpoint

    shipped = load_model("tiny_cells", device="cpu")
    path = save_checkpoint(tmp_path / "mm.pt", shipped.sam, "tiny", shipped.tiny_config,
                           normalisation=ImagePolicy().normalisation())
    model = load_model(str(path), device="cpu")
    image = (100 + make_sample((600, 560), seed=4, dtype=np.float32).image * 300)
    image[:150, :150] += 30000  # one bright corner squeezes the rest into a few levels
    image = image.astype(np.uint16)
    sam_input = to_sam_input(image, model.image_policy())
    tiling = Tiling.auto(image.shape, model.img_size)
    assert tiling.tile_shape is not None
    blocking = Blocking([0, 0], list(image.shape), list(tiling.tile_shape))
    for tile_id in range(blocking.number_of_blocks):
        outer = blocking.get_block_with_halo(tile_id, list(tiling.halo)).outer_block
        rows, cols = slice(outer.begin[0], outer.end[0]), slice(outer.begin[1], outer.end[1])
        np.testing.assert_array_equal(sam_input.tile(rows, cols), _to_image(image[rows, cols]))
    ours = EmbeddingCache(tmp_path / "c").get_or_compute(model, sam_input, precision="fp32")
    predictor = SamPredictor(model.sam)
    predictor.model_type, predictor.model_name = "vit_t", "tiny"  # its signature records them
    theirs = precompute_image_embeddings(predictor, image, verbose=False,
                                         tile_shape=tiling.tile_shape, halo=tiling.halo)
    whole = EmbeddingCache(tmp_path / "w").get_or_compute(model, sam_input.rgb, precision="fp32")
    worst_whole = 0.0
    for tile_id in range(blocking.number_of_blocks):
        mine, ref = ours["features"][str(tile_id)][:], theirs["features"][str(tile_id)][:]
        np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-4)
        worst_whole = max(worst_whole,
                          float(np.abs(whole["features"][str(tile_id)][:] - ref).max()))
    assert worst_whole > 0.05  # whole-image scaling is measurably not micro-sam's


def test_tile_scaling_is_part_of_the_key(tmp_path, tiny_model):
    """Same whole-image input, other per-tile pixels: another entry; untiled keys ignore it."""
    from napari_raysam.core.images import SamInput, to_sam_input

    image = make_sample((600, 560), seed=4, dtype=np.float32).image
    a = to_sam_input(image)
    nudged = image.copy()
    nudged[300, 280] += 1e-5  # the same uint8 whole image, other values to scale tiles from
    b = to_sam_input(nudged)
    tiled = Tiling.auto(a.shape, tiny_model.img_size)
    cache = EmbeddingCache(tmp_path)
    assert np.array_equal(a.rgb, b.rgb)
    assert cache.key(tiny_model, a, tiled, "fp32") != cache.key(tiny_model, b, tiled, "fp32")
    assert cache.key(tiny_model, a, Tiling(), "fp32") == cache.key(tiny_model, b.rgb, Tiling(),
                                                                   "fp32")
    assert cache.key(tiny_model, to_sam_input(image.astype(">f8")), tiled, "fp32") == \
        cache.key(tiny_model, a, tiled, "fp32")  # the values count, not their byte layout
    assert cache.key(tiny_model, SamInput(a.rgb), tiled, "fp32") != cache.key(
        tiny_model, a, tiled, "fp32")  # tiles cut from the whole-image input: other pixels
