"""A faster inference pass through SAM's ViT image encoder (same weights, same maths).

segment_anything's attention materialises the full score matrix, then adds the decomposed
relative-position terms through a broadcast whose result is laid out oddly (so the reshape that
follows copies it again), then runs softmax and a second product. For the global-attention
blocks at 1024 px that is 12 x 4096 x 4096 floats (805 MB) written three times. Here:

- the relative-position terms become the ``attn_mask`` of ``scaled_dot_product_attention``
  (its fused CPU kernel does the scaled product, the softmax and the value product blockwise);
- for global attention the mask is built and consumed a few query rows at a time, so it stays
  in cache instead of streaming through memory;
- residual additions happen in place (no autograd here).

Only inference uses this (``torch.is_grad_enabled()`` falls back to the module); encoders other
than segment_anything's standard ``ImageEncoderViT`` are run unchanged (:func:`supports`).
"""

from __future__ import annotations

ROWS_PER_CHUNK = 16  # query rows per global-attention chunk (of 1, 4, 8, 16, 32, 64: fastest)


def supports(encoder) -> bool:
    """True for segment_anything's standard ViT image encoder (vit_b/l/h and the tiny test one)."""
    from segment_anything.modeling.image_encoder import Attention, Block, ImageEncoderViT

    return type(encoder) is ImageEncoderViT and all(
        type(b) is Block and type(b.attn) is Attention for b in encoder.blocks
    )


def run_encoder(encoder, x):
    """``encoder(x)`` for a preprocessed (B, 3, S, S) batch, faster when :func:`supports`."""
    import torch

    if torch.is_grad_enabled() or not supports(encoder):
        return encoder(x)
    x = encoder.patch_embed(x)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    for block in encoder.blocks:
        x = _block(block, x)
    return encoder.neck(x.permute(0, 3, 1, 2))


def _block(block, x):
    from segment_anything.modeling.image_encoder import window_partition, window_unpartition

    shortcut = x
    x = block.norm1(x)
    if block.window_size > 0:
        h, w = x.shape[1], x.shape[2]
        x, pad_hw = window_partition(x, block.window_size)
        x = window_unpartition(_attention(block.attn, x), block.window_size, pad_hw, (h, w))
    else:
        x = _attention(block.attn, x)
    x.add_(shortcut)  # x is a fresh tensor from the attention
    return x.add_(block.mlp(block.norm2(x)))


def _attention(attn, x):
    """segment_anything's ``Attention.forward`` on (B, H, W, C) through fused SDPA."""
    import torch
    import torch.nn.functional as F
    from segment_anything.modeling.image_encoder import get_rel_pos

    b, h, w, _ = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias).reshape(b, h * w, 3, heads, -1)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, N, d) each
    d = q.shape[-1]
    if not attn.use_rel_pos:
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
    else:
        r_q = q.reshape(b * heads, h, w, d)
        # SAM adds q . R (q unscaled) to the scaled scores; contiguous so the mask views work
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(h, h, attn.rel_pos_h))
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(w, w, attn.rel_pos_w))
        rel_h = rel_h.reshape(b, heads, h, w, h).contiguous()
        rel_w = rel_w.reshape(b, heads, h, w, w).contiguous()
        q = q.contiguous()
        rows = ROWS_PER_CHUNK if h * w > 1024 else h
        out = torch.empty_like(q)
        for r0 in range(0, h, rows):
            r1 = min(r0 + rows, h)
            mask = torch.empty(b, heads, r1 - r0, w, h, w, dtype=q.dtype, device=q.device)
            torch.add(rel_h[:, :, r0:r1, :, :, None], rel_w[:, :, r0:r1, :, None, :], out=mask)
            out[:, :, r0 * w:r1 * w] = F.scaled_dot_product_attention(
                q[:, :, r0 * w:r1 * w], k, v,
                attn_mask=mask.view(b, heads, (r1 - r0) * w, h * w), scale=attn.scale)
    out = out.transpose(1, 2).reshape(b, h, w, heads * d)
    return F.linear(out, attn.proj.weight, attn.proj.bias)
