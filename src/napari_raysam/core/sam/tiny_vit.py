"""SAM's vit_t image encoder (MobileSAM's TinyViT-5M), so vit_t models need no extra package.

Our own implementation of the network micro-sam builds vit_t with (``mobile_sam``), with the
same parameter names, so MobileSAM and micro-sam vit_t checkpoints (``vit_t``, ``vit_t_lm``, ...)
load into it with ``strict=True``: a convolutional stem and stage (MBConv blocks), then three
stages of windowed attention blocks with a learned relative-position bias, then SAM's neck to
256 x 64 x 64.

Why ours and not upstream's: micro-sam does not depend on ``mobile_sam`` (its users have it only
if they installed it by hand; on the package index it exists only as a third-party repackaging,
``mobilesam-mirror``), so vit_t models would need one more runtime dependency, which would also
switch micro-sam's own vit_t path on in the user's environment. Upstream's attention caches its
bias when ``eval()`` is called, and micro-sam loads the weights after that call, so the loaded
biases are ignored until something calls ``eval()`` again; ours reads the live parameter every
forward, so inference and fine-tuning see the same weights. What we keep must match upstream:
``tests/test_tiny_vit.py::test_encoder_matches_upstream_mobile_sam`` runs upstream's vit_t (built
as micro-sam builds it, in a subprocess) and ours with identical random weights and requires a
max abs difference of the embeddings below 1e-4 (measured: 3.9e-7), and loads our state dict
into upstream's with ``strict=True``.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

EMBED_DIMS = (64, 128, 160, 320)
DEPTHS = (2, 2, 6, 2)
HEADS = (2, 4, 5, 10)
WINDOWS = (7, 7, 14, 7)


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (parameter names ``c`` and ``bn``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, pad: int = 0,
                 groups: int = 1, bn_weight: float = 1.0):
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups,
                                       bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))
        nn.init.constant_(self.bn.weight, bn_weight)
        nn.init.zeros_(self.bn.bias)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: the image to a quarter of its size."""

    def __init__(self, dim: int):
        super().__init__()
        self.seq = nn.Sequential(ConvBN(3, dim // 2, 3, 2, 1), nn.GELU(),
                                 ConvBN(dim // 2, dim, 3, 2, 1))

    def forward(self, x):
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise 3x3, 1x1 project, GELU after the sum."""

    def __init__(self, dim: int, expand: float = 4.0):
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = ConvBN(hidden, dim, bn_weight=0.0)
        self.act1, self.act2, self.act3 = nn.GELU(), nn.GELU(), nn.GELU()

    def forward(self, x):
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1x1, depthwise 3x3 (stride 2, or 1 into the last 320-wide stage), 1x1; tokens out."""

    def __init__(self, dim: int, out_dim: int, stride: int):
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)
        self.act = nn.GELU()

    def forward(self, x):  # (B, C, H, W) -> (B, C', H', W')
        return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


class Attention(nn.Module):
    """Multi-head attention over one window with a bias per head and |dy|, |dx| offset.

    ``qkv`` is laid out per head as [q | k | v] (MobileSAM's layout, kept for its weights).
    """

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.key_dim = heads, dim // heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        points = list(itertools.product(range(window), range(window)))
        offsets: dict[tuple[int, int], int] = {}
        index = [offsets.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(offsets))
                 for a in points for b in points]
        self.attention_biases = nn.Parameter(torch.zeros(heads, len(offsets)))
        self.register_buffer("attention_bias_idxs",
                             torch.tensor(index).view(len(points), len(points)),
                             persistent=False)

    def forward(self, x):  # (B, N, C) windows of N tokens
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.heads, 3 * self.key_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.key_dim, dim=-1)
        bias = self.attention_biases[:, self.attention_bias_idxs]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x):
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention (zero-padded to whole windows), depthwise 3x3 conv, MLP."""

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.window = window
        self.attn = Attention(dim, heads, window)
        self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):  # (B, H, W, C)
        b, h, w, c = x.shape
        s = self.window
        pad_h, pad_w = -h % s, -w % s
        y = F.pad(x, (0, 0, 0, pad_w, 0, pad_h)) if pad_h or pad_w else x
        nh, nw = (h + pad_h) // s, (w + pad_w) // s
        y = y.view(b, nh, s, nw, s, c).transpose(2, 3).reshape(b * nh * nw, s * s, c)
        y = self.attn(y).view(b, nh, nw, s, s, c).transpose(2, 3).reshape(b, nh * s, nw * s, c)
        x = x + y[:, :h, :w]
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class Stage(nn.Module):
    """``blocks`` then an optional ``downsample`` (PatchMerging) into the next stage."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


class TinyViTEncoder(nn.Module):
    """MobileSAM's image encoder: (B, 3, 1024, 1024) -> (B, 256, 64, 64)."""

    def __init__(self, img_size: int = 1024, out_chans: int = 256, num_classes: int = 1000):
        super().__init__()
        self.img_size = img_size
        dims = EMBED_DIMS
        self.patch_embed = PatchEmbed(dims[0])
        self.layers = nn.ModuleList()
        for i, depth in enumerate(DEPTHS):
            if i == 0:
                blocks = [MBConv(dims[0]) for _ in range(depth)]
            else:
                blocks = [TinyViTBlock(dims[i], HEADS[i], WINDOWS[i]) for _ in range(depth)]
            last = i == len(DEPTHS) - 1
            stride = 1 if i + 1 == len(DEPTHS) - 1 else 2  # the last stage keeps 64 x 64
            self.layers.append(Stage(blocks, None if last else
                                     PatchMerging(dims[i], dims[i + 1], stride)))
        # TinyViT's ImageNet head: unused by SAM, kept so checkpoints load strictly
        self.norm_head = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], out_chans, 1, bias=False), LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False), LayerNorm2d(out_chans),
        )
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        x = self.patch_embed(x)
        for block in self.layers[0].blocks:
            x = block(x)
        x = self.layers[0].downsample(x).permute(0, 2, 3, 1)  # tokens as (B, H, W, C)
        for stage in self.layers[1:]:
            for block in stage.blocks:
                x = block(x)
            if stage.downsample is not None:
                x = stage.downsample(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.neck(x.permute(0, 3, 1, 2))
