"""A faster prompt -> mask path for SAM's own mask decoder (same weights, same outputs).

SAM's decoder spends most of its CPU time on the 64x64x256 image embedding: it repeats it per
prompt, recomputes the positional encoding per call, projects all 4096 pixels to keys, values
and queries, and upsamples the low-res logits twice. This runs the identical maths pixel-major,
reassociating the products while prompts are few (tokens < channels per head):

- token -> image: ``softmax((Q_h W_k,h) X^T)`` then ``(S X) W_v,h^T`` (the key bias cancels in
  the softmax, value-bias rows sum to one): ``P x C x heads*tokens`` instead of ``P x C x D``;
- image -> token: ``X (W_q,h^T K_h^T)`` and ``S (V_h W_o,h^T)``;
- the 2x2/stride-2 transposed convolutions are per-pixel matrix products (channels-last norm);
- logits are upsampled only where the input-region crop needs them, the identity resize to the
  original size is skipped, and with ``best_only`` only the best multimask output is upsampled.

The dense positional encoding and the image features (per features object) are cached. Decoders
other than segment_anything's standard one are not supported (:func:`supports`).
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np

_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def supports(sam) -> bool:
    """True when ``sam`` has segment_anything's standard mask decoder and transformer."""
    from segment_anything.modeling.mask_decoder import MaskDecoder
    from segment_anything.modeling.transformer import Attention, TwoWayTransformer

    decoder = getattr(sam, "mask_decoder", None)
    if type(decoder) is not MaskDecoder or type(decoder.transformer) is not TwoWayTransformer:
        return False
    tr = decoder.transformer
    attns = [tr.final_attn_token_to_image]
    for layer in tr.layers:
        attns += [layer.self_attn, layer.cross_attn_token_to_image, layer.cross_attn_image_to_token]
    up = decoder.output_upscaling
    convs_ok = len(up) == 5 and all(
        tuple(up[i].kernel_size) == (2, 2) and tuple(up[i].stride) == (2, 2) for i in (0, 3)
    )
    return convs_ok and all(type(a) is Attention for a in attns)


def fast_decoder_for(sam) -> FastDecoder:
    """The (lazily created, cached per model) :class:`FastDecoder` of a SAM module."""
    decoder = _DECODERS.get(sam)
    if decoder is None:
        decoder = _DECODERS[sam] = FastDecoder(sam)
    return decoder


class FastDecoder:
    """SAM prompt encoder + mask decoder for one model, with per-model and per-image caches."""

    def __init__(self, sam, max_images: int = 4):
        from segment_anything.utils.transforms import ResizeLongestSide

        self._sam = weakref.ref(sam)  # a weak key's value must not keep it alive
        self.transform = ResizeLongestSide(int(sam.image_encoder.img_size))
        self._pe: Any = None
        self._pe_key: tuple | None = None
        self._images: OrderedDict = OrderedDict()
        self._max_images = max_images

    @property
    def sam(self):
        return self._sam()

    def dense_pe(self):
        """Positional encoding of the embedding grid, pixel-major (P, C); recomputed only when
        the prompt encoder's frequency matrix changes (new weights loaded in place)."""
        gauss = self.sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
        key = (gauss.data_ptr(), gauss._version, gauss.device)
        if self._pe is None or key != self._pe_key:
            pe = self.sam.prompt_encoder.get_dense_pe()[0]
            self._pe = pe.flatten(1).t().contiguous()
            self._pe_key = key
        return self._pe

    def image(self, features, tile_id: int | None = None):
        """Pixel-major (P, C) image embedding; cached per features object (kept alive while
        cached, so treat embeddings as read-only) and tile."""
        import torch

        key = (id(features), tile_id)
        hit = self._images.get(key)
        if hit is not None and hit[0] is features:
            self._images.move_to_end(key)
            return hit[1], hit[2]
        array = features if tile_id is None else features[str(tile_id)]
        data = array if torch.is_tensor(array) else torch.from_numpy(np.asarray(array[:]))
        grid = tuple(data.shape[-2:])
        image = data.reshape(data.shape[-3], -1).t().to(self._device()).float().contiguous()
        self._images[key] = (features, image, grid)
        while len(self._images) > self._max_images:
            self._images.popitem(last=False)
        return image, grid

    def _device(self):
        return self.sam.prompt_encoder.point_embeddings[0].weight.device

    # --- prediction --------------------------------------------------------------------------

    def predict(self, features, input_size, original_size, point_coords_xy=None,
                point_labels=None, box_xyxy=None, mask_input=None, multimask: bool = False,
                best_only: bool = False, tile_id: int | None = None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt set, like ``SamPredictor.predict``.

        ``features``: (1, C, h, w) array/tensor, or a zarr group of tiles with ``tile_id``.
        Points are (x, y) and boxes (x0, y0, x1, y1) in ``original_size`` pixels. Returns
        (masks (M, H, W) bool, iou_scores (M,), low_res_logits (M, 256, 256)); with
        ``multimask`` M=3, and ``best_only`` keeps only the best-scoring mask in ``masks``.
        """
        import torch

        with torch.inference_mode():
            image, grid = self.image(features, tile_id)
            logits, iou = self._decode(image, grid, original_size, point_coords_xy,
                                       point_labels, box_xyxy, mask_input, multimask)
            chosen = logits
            if best_only and len(iou) > 1:
                chosen = logits[int(torch.argmax(iou))][None]
            masks = self.postprocess(chosen, input_size, original_size)
            return masks.cpu().numpy(), iou.float().cpu().numpy(), logits.float().cpu().numpy()

    def _decode(self, image, grid, original_size, coords, labels, box, mask_input, multimask):
        import torch

        device = image.device
        points = boxes = None
        if coords is not None:
            xy = self.transform.apply_coords(np.asarray(coords, float), tuple(original_size))
            points = (torch.as_tensor(xy, dtype=torch.float, device=device)[None],
                      torch.as_tensor(np.asarray(labels), dtype=torch.int, device=device)[None])
        if box is not None:
            xyxy = self.transform.apply_boxes(np.asarray(box, float)[None], tuple(original_size))
            boxes = torch.as_tensor(xyxy, dtype=torch.float, device=device)
        prompt_encoder = self.sam.prompt_encoder
        sparse, _ = prompt_encoder(points=points, boxes=boxes, masks=None)
        if mask_input is not None:
            masks = torch.as_tensor(np.asarray(mask_input), dtype=torch.float, device=device)
            dense = prompt_encoder._embed_masks(masks.reshape(1, 1, *masks.shape[-2:]))
            src = image + dense[0].flatten(1).t()
        else:
            src = image + prompt_encoder.no_mask_embed.weight
        return _run_decoder(self.sam.mask_decoder, src, self.dense_pe(), grid, sparse[0],
                            multimask)

    def postprocess(self, low_res, input_size, original_size):
        """(M, h, w) logits -> (M, H, W) bool with SAM's geometry (upsample to the model's input,
        crop the padding, resize to ``original_size``), but reading only the low-res rows and
        columns the crop needs and skipping the last resize when it is the identity. A single
        low-res -> original resize was measured to agree only to IoU 0.977-0.993 on random-weight
        logits, so the two steps are kept."""
        import torch.nn.functional as F

        low = low_res.shape[-1]
        factor = self.transform.target_length / low
        in_h, in_w = int(input_size[0]), int(input_size[1])
        out_h, out_w = int(original_size[0]), int(original_size[1])
        # the last input row/col samples low-res index floor((n - 0.5) / f - 0.5) + 1
        rows = min(int(math.floor((in_h - 0.5) / factor - 0.5)) + 2, low)
        cols = min(int(math.floor((in_w - 0.5) / factor - 0.5)) + 2, low)
        crop = low_res[None, :, :rows, :cols].float()
        up = F.interpolate(crop, scale_factor=(factor, factor), mode="bilinear",
                           align_corners=False, recompute_scale_factor=False)
        up = up[..., :in_h, :in_w]
        if (in_h, in_w) != (out_h, out_w):
            up = F.interpolate(up, (out_h, out_w), mode="bilinear", align_corners=False)
        return up[0] > self.sam.mask_threshold


# --- the decoder maths (pixel-major, single prompt set) -----------------------------------------


def _heads(attn) -> tuple[int, int]:
    return attn.num_heads, attn.internal_dim // attn.num_heads


def _token_to_image(attn, q_tok, k_img, v_img):
    """Attention of N tokens over P pixels; returns (N, C). With fewer tokens than channels per
    head, the key/value projections are reassociated onto the token side."""
    import torch
    import torch.nn.functional as F

    h, d = _heads(attn)
    n, c = q_tok.shape
    p = k_img.shape[0]
    q = F.linear(q_tok, attn.q_proj.weight, attn.q_proj.bias).view(n, h, d).transpose(0, 1)
    if n < d:
        g = torch.bmm(q, attn.k_proj.weight.view(h, d, c)).reshape(h * n, c) / math.sqrt(d)
        s = torch.softmax(g @ k_img.t(), dim=-1)  # (h*n, P); the key bias cancels in softmax
        out = torch.baddbmm(attn.v_proj.bias.view(h, 1, d), (s @ v_img).view(h, n, c),
                            attn.v_proj.weight.view(h, d, c).transpose(1, 2))
    else:
        k = F.linear(k_img, attn.k_proj.weight, attn.k_proj.bias).view(p, h, d).permute(1, 2, 0)
        s = torch.softmax(torch.bmm(q, k) / math.sqrt(d), dim=-1)  # (h, n, P)
        v = F.linear(v_img, attn.v_proj.weight, attn.v_proj.bias).view(p, h, d).transpose(0, 1)
        out = torch.bmm(s, v)
    return F.linear(out.transpose(0, 1).reshape(n, h * d), attn.out_proj.weight,
                    attn.out_proj.bias)


def _image_to_token(attn, q_img, k_tok, v_tok, residual):
    """``residual`` + attention of P pixels over N tokens; returns (P, C).

    Scores are kept as (heads, N, P) so the softmax runs over a strided middle axis (a softmax
    over a last axis of ~7 tokens is ~50x slower on CPU). With fewer tokens than channels per
    head, the query and output projections are reassociated onto the token side (the output
    bias folds in too: each pixel's weights sum to one per head)."""
    import torch
    import torch.nn.functional as F

    h, d = _heads(attn)
    n, c = k_tok.shape
    p = q_img.shape[0]
    k = F.linear(k_tok, attn.k_proj.weight, attn.k_proj.bias).view(n, h, d).transpose(0, 1)
    v = F.linear(v_tok, attn.v_proj.weight, attn.v_proj.bias).view(n, h, d).transpose(0, 1)
    if n < d:
        m = torch.bmm(k, attn.q_proj.weight.view(h, d, c)).reshape(h * n, c) / math.sqrt(d)
        bias = torch.bmm(k, attn.q_proj.bias.view(h, d, 1)).reshape(h * n, 1) / math.sqrt(d)
        s = torch.addmm(bias, m, q_img.t()).view(h, n, p)
    else:
        q = F.linear(q_img, attn.q_proj.weight, attn.q_proj.bias).view(p, h, d).permute(1, 2, 0)
        s = torch.bmm(k, q) / math.sqrt(d)
    s = torch.softmax(s, dim=1)
    if n < d:
        w_o = attn.out_proj.weight.view(c, h, d).permute(1, 2, 0)  # (h, d, C)
        u = torch.bmm(v, w_o).reshape(h * n, c) + attn.out_proj.bias / h
        return torch.addmm(residual, s.view(h * n, p).t(), u)
    o = torch.bmm(s.transpose(1, 2), v).transpose(0, 1).reshape(p, h * d)
    return torch.addmm(residual + attn.out_proj.bias, o, attn.out_proj.weight.t())


def _self_attn(attn, q, k, v):
    return attn(q=q[None], k=k[None], v=v[None])[0]


def _run_decoder(decoder, src, pe, grid, sparse, multimask: bool):
    """SAM's MaskDecoder.predict_masks + output selection for one prompt set.

    ``src``: (P, C) image embedding + dense prompt; ``pe``: (P, C); ``sparse``: (N, C).
    Returns low-res logits (M, 4h, 4w) and IoU predictions (M,).
    """
    import torch

    tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight, sparse], dim=0)
    transformer = decoder.transformer
    queries, keys, query_pe = tokens, src, tokens
    for layer in transformer.layers:
        if layer.skip_first_layer_pe:
            queries = _self_attn(layer.self_attn, queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + _self_attn(layer.self_attn, q, q, queries)
        queries = layer.norm1(queries)
        k = keys + pe
        queries = layer.norm2(queries + _token_to_image(
            layer.cross_attn_token_to_image, queries + query_pe, k, keys))
        queries = layer.norm3(queries + layer.mlp(queries))
        keys = layer.norm4(_image_to_token(
            layer.cross_attn_image_to_token, k, queries + query_pe, queries, keys))
    attn_out = _token_to_image(transformer.final_attn_token_to_image, queries + query_pe,
                               keys + pe, keys)
    hs = transformer.norm_final_attn(queries + attn_out)

    ids = list(range(1, decoder.num_mask_tokens)) if multimask else [0]
    hyper = torch.stack([decoder.output_hypernetworks_mlps[i](hs[1 + i]) for i in ids])
    iou = decoder.iou_prediction_head(hs[0])[ids]
    return _upscale(decoder.output_upscaling, keys, grid, hyper), iou


def _upscale(up, keys, grid, hyper):
    """output_upscaling (ConvT 2x2/2, LayerNorm2d, act, ConvT 2x2/2, act) and the hypernetwork
    product as per-pixel matrix products; returns (M, 4h, 4w) logits."""
    import torch
    import torch.nn.functional as F

    conv1, norm, act1, conv2, act2 = up
    p, c = keys.shape
    c1, c2 = conv1.out_channels, conv2.out_channels
    w1 = conv1.weight.permute(0, 2, 3, 1).reshape(c, 4 * c1)  # columns ordered (di, dj, o)
    x = torch.addmm(conv1.bias.repeat(4), keys, w1).view(p * 4, c1)
    x = act1(F.layer_norm(x, (c1,), norm.weight, norm.bias, norm.eps))
    w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
    x = act2(torch.addmm(conv2.bias.repeat(4), x, w2).view(p * 16, c2))
    m = hyper.shape[0]
    h, w = grid
    out = (x @ hyper.t()).view(h, w, 2, 2, 2, 2, m)  # (i, j, di, dj, ei, ej, mask)
    return out.permute(6, 0, 2, 4, 1, 3, 5).reshape(m, 4 * h, 4 * w)
