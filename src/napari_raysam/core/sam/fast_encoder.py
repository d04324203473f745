"""A faster inference pass through SAM's ViT image encoder (same weights, same maths).

segment_anything's attention materialises the full score matrix, then adds the decomposed
relative-position terms through a broadcast whose result is laid out oddly (so the reshape that
follows copies it again), then runs softmax and a second product. For the global-attention
blocks at 1024 px that is 12 x 4096 x 4096 floats (805 MB) streamed through memory several
times. Here:

- global attention runs one query row of the grid at a time (12 x 64 x 4096 scores, ~12 MB, so
  it stays in cache): scores, the two relative-position terms added in place, an in-place
  exponential, and the softmax's normalisation applied to the (64 x 64) output instead of the
  scores;
- window attention passes the relative-position terms as the ``attn_mask`` of
  ``scaled_dot_product_attention`` (one fused kernel);
- residual additions happen in place (no autograd here).

Measured on vit_b at 1024 px (``benchmarks/embedding_compute.py``); tried and slower: SDPA with
the mask for global attention too (per 1-64 rows), folding the terms into longer q/k vectors.
Only inference uses this (``torch.is_grad_enabled()`` falls back to the module); encoders other
than segment_anything's standard ``ImageEncoderViT`` are run unchanged (:func:`supports`). The
attention's ``qkv``/``proj`` and each block's norms and MLP are called as modules, so wrappers
that replace them (micro-sam's LoRA/PEFT surgery on ``attn.qkv``) keep their own maths.
"""

from __future__ import annotations

GLOBAL = 1024  # more tokens than this: attention one grid row at a time


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
    """segment_anything's ``Attention.forward`` on (B, H, W, C)."""
    import torch
    import torch.nn.functional as F
    from segment_anything.modeling.image_encoder import get_rel_pos

    b, h, w, _ = x.shape
    heads = attn.num_heads
    # qkv and proj through their modules, as segment_anything does: a wrapper such as
    # micro-sam's LoRA (AttentionLoRA: base projection + LoRA delta) computes its own maths
    qkv = attn.qkv(x).reshape(b, h * w, 3, heads, -1)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, N, d) each
    d = q.shape[-1]
    if not attn.use_rel_pos:
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
    else:
        r_q = q.reshape(b * heads, h, w, d)
        # SAM adds q . R (q unscaled) to the scaled scores
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(h, h, attn.rel_pos_h))
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(w, w, attn.rel_pos_w))
        rel_h = rel_h.reshape(b, heads, h, w, h, 1).contiguous()
        rel_w = rel_w.reshape(b, heads, h, w, 1, w).contiguous()
        if h * w > GLOBAL:
            out = _global_attention(q * attn.scale, k, v, rel_h, rel_w)
        else:
            mask = torch.add(rel_h, rel_w).view(b, heads, h * w, h * w)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
    out = out.transpose(1, 2).reshape(b, h, w, heads * d)
    return attn.proj(out)


def _global_attention(q, k, v, rel_h, rel_w):
    """softmax(q k^T + rel_h + rel_w) v, one grid row of queries at a time (see module doc)."""
    import torch

    b, heads, h, w = rel_h.shape[:4]
    k_t = k.transpose(-1, -2).contiguous()
    v = v.contiguous()
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    for row in range(h):
        rows = slice(row * w, (row + 1) * w)
        scores = torch.matmul(q[:, :, rows], k_t)  # (B, heads, w, N)
        grid = scores.view(b, heads, 1, w, h, w)
        grid.add_(rel_h[:, :, row:row + 1]).add_(rel_w[:, :, row:row + 1])
        scores.sub_(scores.amax(-1, keepdim=True)).exp_()
        total = scores.sum(-1, keepdim=True)
        out[:, :, rows] = torch.matmul(scores, v).div_(total)
    return out
