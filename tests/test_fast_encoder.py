"""The fused image-encoder pass gives segment_anything's outputs (window, global, chunked)."""

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


@pytest.mark.parametrize("overrides", [{}, {"img_size": 512, "patch_size": 8, "window_size": 14}],
                         ids=["tiny-16x16-grid", "vit-like-64x64-grid-padded-windows-global"])
def test_fast_encoder_matches_segment_anything(overrides):
    encoder = _encoder(**overrides)
    x = torch.randn(1, 3, encoder.img_size, encoder.img_size)
    assert fast_encoder.supports(encoder)
    with torch.inference_mode():
        reference = encoder(x)
        fast = fast_encoder.run_encoder(encoder, x)
    assert fast.shape == reference.shape
    rel = ((fast - reference).norm() / reference.norm()).item()
    assert rel < 1e-5, rel


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
