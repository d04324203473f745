"""SAM architectures we build ourselves: the tiny one (tests, offline demo) and untrained
standard ones (vit_t/b/l/h) to load checkpoints into."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import RaysamError

STANDARD_TYPES = ("vit_t", "vit_b", "vit_l", "vit_h")


class ModelError(RaysamError):
    """A model spec or checkpoint that cannot be loaded."""


@dataclass(frozen=True)
class TinyConfig:
    """Hyper-parameters of the tiny SAM; stored in its checkpoints so it can be rebuilt."""

    img_size: int = 256
    patch_size: int = 16
    encoder_dim: int = 64
    encoder_depth: int = 2
    encoder_heads: int = 2
    window_size: int = 8
    prompt_dim: int = 64
    decoder_mlp_dim: int = 256
    decoder_heads: int = 4


def build_tiny_sam(config: TinyConfig = TinyConfig(), seed: int | None = 0):
    """Build the tiny SAM architecture (random weights, seeded)."""
    from functools import partial

    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    if seed is not None:
        torch.manual_seed(seed)
    grid = config.img_size // config.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=config.img_size,
            patch_size=config.patch_size,
            embed_dim=config.encoder_dim,
            depth=config.encoder_depth,
            num_heads=config.encoder_heads,
            mlp_ratio=4,
            out_chans=config.prompt_dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=config.window_size,
            global_attn_indexes=(config.encoder_depth - 1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.img_size, config.img_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=config.prompt_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_heads,
            ),
            transformer_dim=config.prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=config.prompt_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def build_standard_sam(model_type: str):
    """An untrained SAM of a standard architecture (vit_t needs the mobile_sam package)."""
    arch = model_type[:5]
    if arch == "vit_t":
        try:
            from mobile_sam import sam_model_registry
        except ImportError as exc:
            raise ModelError(
                "vit_t (MobileSAM) needs the 'mobile_sam' package: "
                "pip install git+https://github.com/ChaoningZhang/MobileSAM"
            ) from exc
    else:
        from segment_anything import sam_model_registry
    if arch not in sam_model_registry:
        raise ModelError(f"Unknown SAM architecture {model_type!r}; use one of {STANDARD_TYPES}.")
    return sam_model_registry[arch]()
