"""One training step as an ``nn.Module``, so DDP (``prepare_model``) sees a normal ``forward``
and synchronises gradients on the single ``backward``."""

from __future__ import annotations

from torch import nn

from napari_raysam.core.sam.engine import encode_tiles, run_rounds


class SamStep(nn.Module):
    """One training step's forward: (encoder,) then batched decoder rounds per tile.

    ``frozen_encoder``: embeddings are given (decoder mode) instead of images.
    """

    def __init__(self, sam, frozen_encoder: bool):
        super().__init__()
        self.sam = sam
        self.frozen_encoder = frozen_encoder

    def forward(self, tiles, masks: list, first: str, rounds: int, generator,
                box_distortion: float, use_mask_inputs: bool):
        """tiles: (B, H, W, 3) uint8 images, or (B, C, h, w) embeddings in decoder mode;
        masks: B tensors (N_i, S, S) bool. Returns (loss, number of objects)."""
        if self.frozen_encoder:
            embeddings = tiles.to(self.sam.device)
        else:
            embeddings = encode_tiles(self.sam, tiles)
        total, n_obj = 0.0, 0
        for emb, m in zip(embeddings, masks, strict=True):
            res = run_rounds(self.sam, emb[None], m, first, rounds, generator,
                             box_distortion=box_distortion, use_mask_inputs=use_mask_inputs)
            total = total + res.loss
            n_obj += len(m)
        return total / len(masks), n_obj
