"""SAM architectures we build ourselves: the tiny one (tests, offline demo) and untrained
standard ones (vit_t/b/l/h) to load checkpoints into; vit_t's encoder is :mod:`.tiny_vit`."""

from __future__ import annotations

from dataclasses import dataclass

from napari_raysam.core.errors import RaysamError

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
    from segment_anything.modeling import ImageEncoderViT

    if seed is not None:
        torch.manual_seed(seed)
    encoder = ImageEncoderViT(
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
    )
    return _assemble_sam(encoder, config.prompt_dim, config.img_size // config.patch_size,
                         config.decoder_mlp_dim, config.decoder_heads)


def build_vit_t_sam():
    """An untrained vit_t SAM (MobileSAM): our TinyViT encoder, SAM's prompt encoder and mask
    decoder; MobileSAM / micro-sam vit_t checkpoints load into it strictly."""
    from napari_raysam.core.sam.tiny_vit import TinyViTEncoder

    return _assemble_sam(TinyViTEncoder(img_size=1024), 256, 64, 2048, 8)


def _assemble_sam(encoder, prompt_dim: int, grid: int, mlp_dim: int, heads: int):
    """SAM around ``encoder`` (whose output is ``prompt_dim`` x ``grid`` x ``grid``)."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    return Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(encoder.img_size, encoder.img_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=mlp_dim,
                                          num_heads=heads),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=prompt_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def build_standard_sam(model_type: str):
    """An untrained SAM of a standard architecture (vit_t, vit_b, vit_l, vit_h)."""
    arch = model_type[:5]
    if arch == "vit_t":
        return build_vit_t_sam()
    from segment_anything import sam_model_registry

    if arch not in sam_model_registry:
        raise ModelError(f"Unknown SAM architecture {model_type!r}; use one of {STANDARD_TYPES}.")
    return sam_model_registry[arch]()
