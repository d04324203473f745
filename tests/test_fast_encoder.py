"""The fused image-encoder pass gives segment_anything's outputs (window, global, chunked), also
for an encoder whose attention projections are wrapped (micro-sam's LoRA, any other module)."""

from __future__ import annotations

import pytest
import torch

from napari_raysam.core.sam import fast_encoder
from napari_raysam.core.sam.architectures import TinyConfig, build_tiny_sam


def _encoder(**overrides):
    torch.manual_seed(0)
    sam = build_tiny_sam(TinyConfig(**overrides)).eval()
    for name, p in sam.image_encoder.named_parameters():
        if "rel_pos" in name:  # they start at zero: make them matter
            p.data.normal_(0, 0.2)
    return sam.image_encoder


ENCODERS = pytest.mark.parametrize(
    "overrides", [{}, {"img_size": 512, "patch_size": 8, "window_size": 14}],
    ids=["tiny-16x16-grid", "vit-like-64x64-grid-padded-windows-global"])


def _assert_fast_matches(encoder):
    x = torch.randn(1, 3, encoder.img_size, encoder.img_size)
    assert fast_encoder.supports(encoder)
    with torch.inference_mode():
        reference = encoder(x)
        fast = fast_encoder.run_encoder(encoder, x)
    assert fast.shape == reference.shape
    rel = ((fast - reference).norm() / reference.norm()).item()
    assert rel < 1e-5, rel


@ENCODERS
def test_fast_encoder_matches_segment_anything(overrides):
    _assert_fast_matches(_encoder(**overrides))


@ENCODERS
def test_fast_encoder_matches_a_lora_wrapped_encoder(overrides):
    """Mode lora's model (micro-sam's AttentionLoRA around every qkv, which has no .weight)."""
    from napari_raysam.core.training.trainable import setup_mode

    torch.manual_seed(0)
    sam = build_tiny_sam(TinyConfig(**overrides)).eval()
    setup_mode(sam, "lora", lora_rank=4)
    encoder = sam.image_encoder
    qkv = encoder.blocks[0].attn.qkv
    assert type(qkv).__name__ == "AttentionLoRA" and not hasattr(qkv, "weight")
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            if "w_b_linear" in name or "rel_pos" in name:  # zero at start: make them matter
                p.normal_(0, 0.2)
        x = torch.randn(1, 3, encoder.img_size, encoder.img_size)
        lora = encoder(x)
        wrappers = [block.attn.qkv for block in encoder.blocks]
        for block in encoder.blocks:  # the same encoder without the LoRA delta
            block.attn.qkv = block.attn.qkv.qkv_proj
        plain = encoder(x)
        for block, wrapper in zip(encoder.blocks, wrappers, strict=True):
            block.attn.qkv = wrapper
    assert ((lora - plain).norm() / plain.norm()).item() > 1e-2  # the delta matters here
    _assert_fast_matches(encoder)


def test_fast_encoder_uses_an_unknown_qkv_module_s_own_forward():
    """A projection module the fused pass knows nothing about is called, not read for .weight."""

    class Shifted(torch.nn.Module):
        def __init__(self, linear):
            super().__init__()
            self.inner = linear

        def forward(self, x):
            return torch.tanh(self.inner(x)) + 0.5

    encoder = _encoder()
    for block in encoder.blocks:
        block.attn.qkv = Shifted(block.attn.qkv)
        block.attn.proj = Shifted(block.attn.proj)
    _assert_fast_matches(encoder)


def test_fast_encoder_falls_back_for_training_and_other_encoders():
    encoder = _encoder()
    x = torch.randn(1, 3, encoder.img_size, encoder.img_size)
    calls = []
    handle = encoder.register_forward_hook(lambda *a: calls.append(1))
    fast_encoder.run_encoder(encoder, x).sum().backward()  # grad enabled: the module itself
    assert calls == [1] and encoder.patch_embed.proj.weight.grad is not None
    with torch.no_grad():
        fast_encoder.run_encoder(encoder, x)
    assert calls == [1]  # the fused path does not call the module's forward
    handle.remove()

    class Custom(type(encoder)):
        pass

    encoder.__class__ = Custom
    assert not fast_encoder.supports(encoder)
