"""The upstream side of the vit_t golden test, run in its own process so that no test of ours
imports ``mobile_sam`` (``pip install mobilesam-mirror``).

``python mobile_sam_golden.py WORKDIR`` builds vit_t exactly as micro-sam does
(``mobile_sam.sam_model_registry["vit_t"]()``, which puts it in eval mode), loads WORKDIR's
``weights.pt`` (a vit_t state dict written by our code) into it with ``strict=True``, and writes
``upstream.npz``: the encoder's output on ``input.npy``, and how far TinyViT's cached attention
bias was off after the load, before a second ``.eval()`` refreshed it (micro-sam's
``get_sam_model`` loads after the build's ``eval()`` and does not call it again).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch


def randomize(state: dict, seed: int) -> dict:
    """Seeded random values for every floating tensor of a state dict (BatchNorm variances
    positive, attention biases as large as trained logit offsets)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(state):
        value = state[name]
        if not value.is_floating_point():
            out[name] = value.clone()
        elif name.endswith("running_var"):
            out[name] = torch.rand(value.shape, generator=gen) + 0.5
        elif name.endswith("attention_biases"):
            out[name] = torch.randn(value.shape, generator=gen)
        else:
            out[name] = torch.randn(value.shape, generator=gen) * 0.1
    return out


def main(workdir: Path) -> None:
    with warnings.catch_warnings():  # timm's deprecation warnings, as micro-sam silences them
        warnings.simplefilter("ignore")
        from mobile_sam import sam_model_registry

    sam = sam_model_registry["vit_t"]()  # what micro_sam.util.get_sam_model builds for vit_t
    sam.load_state_dict(torch.load(workdir / "weights.pt", weights_only=True), strict=True)
    attns = [m for m in sam.image_encoder.modules() if hasattr(m, "attention_bias_idxs")]
    stale = max(float((m.ab - m.attention_biases[:, m.attention_bias_idxs]).abs().max())
                for m in attns)
    sam.eval()  # TinyViT caches its attention bias (``ab``) on eval(): refresh it after the load
    with torch.no_grad():
        out = sam.image_encoder(torch.from_numpy(np.load(workdir / "input.npy")))
    np.savez(workdir / "upstream.npz", out=out.numpy(), stale_bias=np.float32(stale))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
