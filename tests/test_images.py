import numpy as np
import pytest

from napari_raysam.core.images import ImageError, ImagePolicy, pixel_hash, to_sam_rgb


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_grayscale_any_dtype_becomes_rgb_uint8(dtype):
    rng = np.random.default_rng(0)
    image = (rng.random((40, 50)) * 200).astype(dtype)
    rgb = to_sam_rgb(image)
    assert rgb.shape == (40, 50, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == rgb[..., 1]).all() and rgb.max() == 255 and rgb.min() == 0


def test_same_pixels_same_output_regardless_of_dtype_scale():
    rng = np.random.default_rng(1)
    base = rng.random((32, 32))
    a = to_sam_rgb((base * 1000).astype(np.float32))
    b = to_sam_rgb(base * 1000)
    assert np.array_equal(a, b)


def test_rgb_and_rgba_last_axis():
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 255, (20, 30, 4), dtype=np.uint8)
    out = to_sam_rgb(rgba)
    assert out.shape == (20, 30, 3)
    assert np.array_equal(out, to_sam_rgb(rgba[..., :3]))


def test_hpa_four_channels_choose_channels():
    rng = np.random.default_rng(3)
    hpa = rng.integers(0, 4000, (4, 24, 24)).astype(np.uint16)
    hpa[3] = 0  # constant channel
    default = to_sam_rgb(hpa, ImagePolicy(channel_axis=0))
    assert default.shape == (24, 24, 3)
    chosen = to_sam_rgb(hpa, ImagePolicy(channel_axis=0, channels=(2, 3)))
    assert np.array_equal(chosen[..., 0], default[..., 2])
    assert (chosen[..., 1] == 0).all() and (chosen[..., 2] == 0).all()


def test_nan_inf_and_constant_images_are_handled():
    image = np.ones((16, 16), np.float32)
    assert (to_sam_rgb(image) == 0).all()
    image[3:6, 3:6] = 5
    image[0, 0] = np.nan
    image[1, 1] = np.inf
    out = to_sam_rgb(image)
    assert out[4, 4, 0] == 255 and out[0, 0, 0] == 0 and out[1, 1, 0] == 0
    assert (to_sam_rgb(np.full((8, 8), np.nan)) == 0).all()


@pytest.mark.parametrize(
    "array, policy, match",
    [
        (np.zeros((5, 6, 7)), ImagePolicy(), "Expected a 2D image"),
        (np.zeros((1, 1)), ImagePolicy(), "at least 2x2"),
        (np.zeros((0, 10)), ImagePolicy(), "at least 2x2"),
        (np.zeros((4, 8, 8)), ImagePolicy(channel_axis=0, channels=(5,)), "do not exist"),
        (np.zeros((4, 8, 8)), ImagePolicy(channel_axis=0, channels=(0, 1, 2, 3)), "1 to 3"),
        (np.zeros((8, 8)), ImagePolicy(channel_axis=0), "needs a 3D"),
    ],
)
def test_bad_images_have_clear_errors(array, policy, match):
    with pytest.raises(ImageError, match=match):
        to_sam_rgb(array, policy)


def test_pixel_hash_depends_on_values_shape_and_dtype():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert pixel_hash(a) == pixel_hash(a.copy())
    assert pixel_hash(a) != pixel_hash(a.reshape(4, 3))
    assert pixel_hash(a) != pixel_hash(a.astype(np.uint16))
    b = a.copy()
    b[0, 0] = 1
    assert pixel_hash(a) != pixel_hash(b)


def _micro_sam_pixels(image):
    import warnings

    from micro_sam.util import _to_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its "only the first three channels" warning
        return _to_image(image)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("channels", [None, 2, 3, 4])
def test_default_pixels_are_micro_sams(dtype, channels):
    """The default scaling gives exactly what micro-sam feeds its encoder (2D, RGB, 2/4 ch)."""
    rng = np.random.default_rng(5)
    shape = (37, 53) if channels is None else (37, 53, channels)
    scale = 1.0 if np.dtype(dtype).kind == "f" else np.iinfo(dtype).max
    image = (rng.uniform(0.05, 0.7, shape) * scale).astype(dtype)
    if np.dtype(dtype).kind == "f":
        image = image * 1e-3 + 2.0  # a narrow float range far from 0 (float32 rounding counts)
    policy = ImagePolicy(channel_axis=None if channels in (None, 3, 4) else 2)
    ours = to_sam_rgb(image, policy)
    assert ours.dtype == np.uint8 and ours.shape == (37, 53, 3)
    assert np.array_equal(ours, _micro_sam_pixels(image))


def test_percentile_option_keeps_cells_visible_despite_hot_pixels():
    """One saturated pixel squeezes min-max (micro-sam's) to a few grey levels; percentile
    scaling ignores it. The percentile path is the one checkpoints of ours were trained with."""
    from napari_raysam.core.images import LEGACY, PERCENTILE

    rng = np.random.default_rng(6)
    image = (100 + rng.normal(300, 40, (64, 64))).astype(np.uint16)
    image[20:40, 20:40] += 1200  # a cell
    image[3, 5] = 65535  # a hot pixel
    minmax, pct = to_sam_rgb(image), to_sam_rgb(image, LEGACY)
    assert np.array_equal(minmax, _micro_sam_pixels(image))
    assert minmax[30, 30, 0] - minmax[5, 50, 0] < 8  # cell vs background: a few grey levels
    assert pct[30, 30, 0] - pct[5, 50, 0] > 150
    assert LEGACY.scaling == PERCENTILE and (LEGACY.lower, LEGACY.upper) == (1.0, 99.8)


def test_normalisation_round_trip_and_bad_values():
    from napari_raysam.core.images import LEGACY, normalisation_tag

    channels = ImagePolicy(channel_axis=0, channels=(2, 0))
    assert channels.using(None) is channels
    pct = channels.using(LEGACY.normalisation())
    assert (pct.channel_axis, pct.channels, pct.scaling) == (0, (2, 0), "percentile")
    assert pct.using(ImagePolicy().normalisation()).scaling == "minmax"
    assert ImagePolicy().normalisation() == {"scaling": "minmax", "policy_version": 2}
    assert normalisation_tag(LEGACY.normalisation()) != normalisation_tag(
        ImagePolicy().normalisation())
    with pytest.raises(ImageError, match="Unknown scaling 'zscore'"):
        ImagePolicy(scaling="zscore")
    with pytest.raises(ImageError, match="0 <= lower < upper <= 100"):
        ImagePolicy(scaling="percentile", lower=99, upper=1)
    for bad in ({"scaling": "minmax", "gamma": 2}, ["minmax"], {"lower": "x"}):
        with pytest.raises(ImageError, match="normalisation"):
            ImagePolicy().using(bad)
