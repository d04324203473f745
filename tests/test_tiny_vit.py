"""vit_t (MobileSAM) without the mobile_sam package: our TinyViT encoder against upstream
MobileSAM's (golden output, in a subprocess), its checkpoints, the micro-sam registry path,
prompts through micro-sam's own functions, and the LoRA refusal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.sam import models


@pytest.fixture(scope="module")
def vit_t_file(tmp_path_factory):
    """A vit_t checkpoint as MobileSAM / micro-sam ship it: a plain SAM state dict."""
    torch.manual_seed(3)
    sam = models.build_standard_sam("vit_t")
    path = tmp_path_factory.mktemp("vit_t") / "mobile_sam.pt"
    torch.save(sam.state_dict(), path)
    return path, sam.state_dict()


def test_encoder_shapes_and_mobile_sam_parameter_names():
    sam = models.build_standard_sam("vit_t")
    names = sam.image_encoder.state_dict()
    # MobileSAM's names (so its checkpoints load strictly): a few from each part
    for key in ("patch_embed.seq.0.c.weight", "patch_embed.seq.2.bn.running_var",
                "layers.0.blocks.1.conv3.bn.weight", "layers.0.downsample.conv2.c.weight",
                "layers.2.blocks.5.attn.attention_biases", "layers.3.blocks.1.local_conv.c.weight",
                "layers.3.blocks.1.mlp.fc2.bias", "norm_head.weight", "head.weight",
                "neck.3.bias"):
        assert key in names, key
    assert "layers.1.blocks.0.attn.attention_bias_idxs" not in names  # not persistent
    assert names["layers.2.blocks.0.attn.attention_biases"].shape == (5, 14 * 14)
    assert names["layers.2.downsample.conv2.c.weight"].shape == (320, 1, 3, 3)
    with torch.no_grad():
        out = sam.image_encoder.eval()(torch.randn(1, 3, 1024, 1024))
    assert out.shape == (1, 256, 64, 64) and torch.isfinite(out).all()


GOLDEN_ATOL = 1e-4  # float32 on one CPU; the two differ only in op order (SDPA vs softmax)


#: Upstream MobileSAM, installed here by scripts/setup.sh, never into the environment.
UPSTREAM = Path(__file__).resolve().parents[1] / ".upstream"


@pytest.mark.skipif(not (UPSTREAM / "mobile_sam").is_dir(),
                    reason="upstream MobileSAM is not in .upstream/ (bash scripts/setup.sh "
                           "installs it there); our vit_t tests run without it")
def test_encoder_matches_upstream_mobile_sam(tmp_path):
    """Identical random weights in ours and in upstream MobileSAM's vit_t (built as micro-sam
    builds it, in a subprocess) give the same embedding. Our state dict loads into upstream's
    with strict=True, so the key sets are equal and checkpoints load both ways."""
    from mobile_sam_golden import randomize

    ours = models.build_standard_sam("vit_t").eval()
    ours.load_state_dict(randomize(ours.state_dict(), seed=1), strict=True)
    torch.save(ours.state_dict(), tmp_path / "weights.pt")
    x = np.random.default_rng(0).standard_normal((1, 3, 1024, 1024), dtype=np.float32)
    np.save(tmp_path / "input.npy", x)
    helper = Path(__file__).with_name("mobile_sam_golden.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(UPSTREAM), *filter(None, [os.environ.get("PYTHONPATH")])])}
    upstream_side = subprocess.Popen([sys.executable, str(helper), str(tmp_path)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with torch.no_grad():  # ours meanwhile
        out = ours.image_encoder(torch.from_numpy(x)).numpy()
    _, err = upstream_side.communicate(timeout=600)
    assert upstream_side.returncode == 0, err[-3000:]

    upstream = np.load(tmp_path / "upstream.npz")
    assert out.shape == upstream["out"].shape == (1, 256, 64, 64)
    assert np.abs(upstream["out"]).max() > 0.1  # the weights reach the output
    diff = float(np.abs(out - upstream["out"]).max())
    assert diff < GOLDEN_ATOL, f"max abs diff {diff:.2e} vs upstream MobileSAM"
    print(f"max abs diff {diff:.2e}; upstream's cached attention bias was off by "
          f"{float(upstream['stale_bias']):.2f} until eval() after the load")


def test_window_bias_is_shared_by_equal_offsets():
    from napari_raysam.core.sam.tiny_vit import Attention

    attn = Attention(dim=8, heads=2, window=3)
    idx = attn.attention_bias_idxs
    assert idx.shape == (9, 9) and attn.attention_biases.shape == (2, 9)  # |dy|,|dx| in 0..2
    assert idx[0, 4] == idx[4, 8] == idx[8, 4]  # (1, 1) apart, either direction
    assert idx[0, 1] != idx[0, 3]  # one column vs one row apart


def test_mobile_sam_checkpoint_loads_and_segments(tmp_path, vit_t_file):
    from micro_sam.prompt_based_segmentation import segment_from_points

    from napari_raysam.core.sam import segment as seg

    path, state = vit_t_file
    loaded = models.load_model(str(path), device="cpu")
    assert loaded.model_type == "vit_t" and loaded.img_size == 1024
    assert loaded.normalisation["scaling"] == "minmax"  # not ours: micro-sam's pipeline
    key = "image_encoder.layers.2.blocks.3.attn.qkv.weight"
    assert torch.equal(loaded.sam.state_dict()[key], state[key])

    rgb = np.random.default_rng(0).integers(0, 255, (200, 240, 3), dtype=np.uint8)
    from napari_raysam.core.sam.embeddings import EmbeddingCache

    embeddings = EmbeddingCache(tmp_path / "emb").get_or_compute(loaded, rgb)
    points, labels = np.array([[100.0, 120.0]]), np.array([1])
    ours = seg.segment(loaded, embeddings, points, labels, None)
    assert ours.shape == (200, 240)
    # micro-sam's own function on the same predictor and image agrees (same model, same maths)
    loaded.predictor.set_image(rgb)
    theirs = segment_from_points(loaded.predictor, points, labels)
    assert theirs.squeeze().shape == (200, 240)
    inter = np.logical_and(ours, theirs.squeeze()).sum()
    union = np.logical_or(ours, theirs.squeeze()).sum()
    assert union == 0 or inter / union > 0.99


def test_our_vit_t_checkpoint_round_trip(tmp_path, vit_t_file):
    loaded = models.load_model(str(vit_t_file[0]), device="cpu")
    path = models.save_checkpoint(tmp_path / "ours.pt", loaded.sam, "vit_t", lineage={"run": "r"})
    again = models.load_model(str(path), device="cpu")
    assert again.model_type == "vit_t" and again.lineage == {"run": "r"}
    assert again.encoder_fingerprint == loaded.encoder_fingerprint


def test_registry_vit_t_without_mobile_sam(tmp_path, monkeypatch, vit_t_file):
    """micro-sam builds vit_t with mobile_sam (absent here); the same registry files (fetched and
    hash-checked by micro-sam's pooch registry) load into our vit_t, decoder included."""
    import shutil

    import micro_sam.util
    import pooch

    path, state = vit_t_file
    cache = tmp_path / "models"
    cache.mkdir()
    shutil.copy(path, cache / "vit_t_lm")
    decoder = {"encoder.weight": torch.ones(2, 2)}
    torch.save(decoder, cache / "vit_t_lm_decoder")
    registry = pooch.create(path=cache, base_url="http://127.0.0.1:9/", registry={
        name: "sha256:" + pooch.file_hash(str(cache / name)) for name in
        ("vit_t_lm", "vit_t_lm_decoder")})
    monkeypatch.setattr(micro_sam.util, "models", lambda: registry)
    monkeypatch.setattr(micro_sam.util, "VIT_T_SUPPORT", False)

    loaded = models.load_model("vit_t_lm", device="cpu")
    assert loaded.spec == "vit_t_lm" and loaded.model_type == "vit_t"
    key = "mask_decoder.iou_token.weight"
    assert torch.equal(loaded.sam.state_dict()[key], state[key])
    assert torch.equal(loaded.decoder_state["encoder.weight"], decoder["encoder.weight"])

    (cache / "vit_t_lm").write_bytes(b"tampered")  # a file that fails its hash is not used
    with pytest.raises(Exception, match="(?i)hash|download|connect|refused"):
        models.load_model("vit_t_lm", device="cpu")


def test_lora_refuses_vit_t_before_any_work():
    from napari_raysam.core.training.config import TrainConfig
    from napari_raysam.core.training.trainable import setup_mode

    with pytest.raises(RaysamError, match="'decoder' or 'full' for vit_t"):
        TrainConfig(dataset="set", model="vit_t_lm", mode="lora").validate()
    sam = models.build_standard_sam("vit_t")  # a vit_t given as a file: refused in setup
    with pytest.raises(RaysamError, match="vit_t"):
        setup_mode(sam, "lora")
    assert all(p.requires_grad for p in sam.parameters())  # untouched
