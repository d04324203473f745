import pathlib
import time

import pytest
import torch

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.sam import models
from napari_raysam.core.sam.models import ModelError, TinyConfig


def test_tiny_model_is_small_and_seeded():
    a = models.load_model("tiny", device="cpu")
    b = models.load_model("tiny", device="cpu")
    c = models.load_model("tiny:1", device="cpu")
    n_params = sum(p.numel() for p in a.sam.parameters())
    assert 300_000 < n_params < 600_000
    assert a.img_size == 256 and a.model_type == "tiny"
    assert a.encoder_fingerprint == b.encoder_fingerprint != c.encoder_fingerprint


def test_our_tiny_checkpoint_round_trip(tmp_path, tiny_model):
    path = models.save_checkpoint(tmp_path / "m.pt", tiny_model.sam, "tiny", TinyConfig(),
                                  lineage={"dataset": "abc", "epochs": [1, 2]})
    raw = torch.load(path, weights_only=True)  # plain tensors and values only
    assert raw["model_type"] == "tiny" and "model_state" in raw
    loaded = models.load_model(str(path), device="cpu")
    assert loaded.model_type == "tiny" and loaded.lineage["dataset"] == "abc"
    assert loaded.encoder_fingerprint == tiny_model.encoder_fingerprint
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary left behind


def test_decoder_change_keeps_encoder_fingerprint(tmp_path, tiny_model):
    sam = models.build_tiny_sam(seed=0)
    with torch.no_grad():
        for p in sam.mask_decoder.parameters():
            p.add_(0.1)
    path = models.save_checkpoint(tmp_path / "dec.pt", sam, "tiny", TinyConfig())
    loaded = models.load_model(str(path), device="cpu")
    assert loaded.encoder_fingerprint == tiny_model.encoder_fingerprint


def test_standard_checkpoint_loads_in_micro_sam_and_here(tmp_path):
    from micro_sam.util import get_sam_model

    sam = models.build_standard_sam("vit_b")
    path = models.save_checkpoint(tmp_path / "vit_b.pt", sam, "vit_b", lineage={"run": "x"})
    predictor = get_sam_model(model_type="vit_b", checkpoint_path=str(path), device="cpu")
    key = "mask_decoder.iou_prediction_head.layers.0.weight"
    assert torch.equal(predictor.model.state_dict()[key], sam.state_dict()[key])
    ours = models.load_model(str(path), device="cpu")
    assert ours.model_type == "vit_b" and ours.lineage == {"run": "x"}


def test_micro_sam_style_checkpoint_with_prefix(tmp_path, tiny_model):
    state = {f"sam.{k}": v for k, v in tiny_model.sam.state_dict().items()}
    path = tmp_path / "torch_em_like.pt"
    torch.save({"model_state": state, "napari_raysam": {"tiny_config": {}}}, path)
    with pytest.raises(ModelError, match="Cannot tell which SAM architecture"):
        models.load_model(str(path), device="cpu")  # empty tiny config -> not tiny, not vit_*
    torch.save({"model_state": state,
                "napari_raysam": {"tiny_config": vars(TinyConfig())}}, path)
    assert models.load_model(str(path), device="cpu").model_type == "tiny"


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        models.load_model(str(tmp_path / "nope.pt"))


def test_wrong_architecture(tmp_path):
    small = models.build_tiny_sam(TinyConfig(encoder_dim=32), seed=0)
    path = tmp_path / "wrong.pt"
    models.save_checkpoint(path, small, "tiny", TinyConfig())  # config says 64, weights are 32
    with pytest.raises(ModelError, match="another model"):
        models.load_model(str(path))


def test_truncated_file(tmp_path, tiny_model):
    path = models.save_checkpoint(tmp_path / "full.pt", tiny_model.sam, "tiny", TinyConfig())
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match="truncated or corrupt"):
        models.load_model(str(cut))


def test_html_error_page(tmp_path):
    page = tmp_path / "vit_b_lm.pt"
    page.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    with pytest.raises(ModelError, match="web page"):
        models.load_model(str(page))


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model_state": {}, "payload": _Evil(str(marker))}, path)
    with pytest.raises(ModelError, match="not loaded for safety"):
        models.load_model(str(path))
    assert not marker.exists()


def test_unknown_name_lists_choices():
    with pytest.raises(ModelError, match="vit_b_lm"):
        models.load_model("vit_q_unknown")


def test_offline_registry_model_fails_fast(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    start = time.monotonic()
    with pytest.raises(RaysamError, match="could not be downloaded.*local file|path"):
        models.load_model("vit_b_lm")
    assert time.monotonic() - start < 30  # generous: the point is no multi-minute hang


def test_best_device_is_known():
    assert models.best_device() in ("cuda", "mps", "cpu")


def test_random_bytes_are_called_corrupt(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(ModelError, match="not a PyTorch checkpoint"):
        models.load_model(str(junk))


def test_checkpoint_records_the_normalisation_its_model_uses(tmp_path, tiny_model):
    """Ours record it; ours from before it was recorded (the shipped tiny_cells among them)
    were trained with percentile scaling and keep it; micro-sam-style defaults are min-max."""
    from napari_raysam.core.images import LEGACY, ImagePolicy

    assert tiny_model.normalisation == ImagePolicy().normalisation()  # micro-sam's min-max
    pct = models.save_checkpoint(tmp_path / "pct.pt", tiny_model.sam, "tiny", TinyConfig(),
                                 normalisation=LEGACY.normalisation())
    assert torch.load(pct, weights_only=True)["napari_raysam"]["normalisation"] == {
        "scaling": "percentile", "lower": 1.0, "upper": 99.8, "policy_version": 2}
    loaded = models.load_model(str(pct), device="cpu")
    assert loaded.normalisation == LEGACY.normalisation()
    assert loaded.image_policy(ImagePolicy(channel_axis=0)).scaling == "percentile"
    default = models.save_checkpoint(tmp_path / "mm.pt", tiny_model.sam, "tiny", TinyConfig())
    assert models.load_model(str(default), device="cpu").normalisation["scaling"] == "minmax"

    raw = torch.load(default, weights_only=True)
    del raw["napari_raysam"]["normalisation"]  # as written before it was recorded
    torch.save(raw, tmp_path / "old.pt")
    assert models.load_model(str(tmp_path / "old.pt"), "cpu").normalisation["scaling"] == (
        "percentile")
    assert models.load_model("tiny_cells", "cpu").normalisation == LEGACY.normalisation()

    raw["napari_raysam"]["normalisation"] = {"scaling": "zscore"}
    torch.save(raw, tmp_path / "future.pt")
    with pytest.raises(ModelError, match="future.pt records a normalisation .*Unknown scaling"):
        models.load_model(str(tmp_path / "future.pt"), "cpu")
