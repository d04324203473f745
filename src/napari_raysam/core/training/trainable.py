"""What trains in each mode, LoRA surgery (micro-sam PEFT) and merging LoRA back into SAM."""

from __future__ import annotations

from napari_raysam.core.errors import RaysamError


def require_peft():
    """micro-sam's PEFT module, or a RaysamError saying how to get it (checked before training)."""
    import importlib

    try:
        peft_sam = importlib.import_module("micro_sam.models.peft_sam")
    except Exception as exc:  # ImportError, or a broken install
        raise RaysamError(
            f"Mode 'lora' needs micro-sam's PEFT support (micro_sam.models.peft_sam), which could "
            f"not be imported ({exc}). Install or upgrade micro-sam (>= 1.1), or use --mode "
            "decoder or --mode full."
        ) from exc
    return peft_sam


def setup_mode(sam, mode: str, lora_rank: int = 4):
    """Freeze/wrap ``sam`` in place for ``mode``; returns the trainable parameters.

    decoder: only prompt encoder + mask decoder train. lora: micro-sam's PEFT_Sam adds LoRA
    (q, v) to every encoder block; the original encoder weights stay frozen. full: everything.
    """
    if mode == "lora":
        if not hasattr(sam.image_encoder, "blocks"):  # vit_t given as a file
            from napari_raysam.core.training.config import NO_LORA_VIT_T

            raise RaysamError(NO_LORA_VIT_T)
        peft = require_peft()
        peft.PEFT_Sam(sam, rank=lora_rank, peft_module=peft.LoRASurgery)  # modifies sam
    for p in sam.image_encoder.parameters():
        p.requires_grad = mode == "full"
    if mode == "lora":
        for name, p in sam.image_encoder.named_parameters():
            p.requires_grad = "w_a_linear" in name or "w_b_linear" in name
    return [p for p in sam.parameters() if p.requires_grad]


def trainable_state(sam) -> dict:
    """The weights a run changes (what checkpoints must hold to restore it)."""
    names = {n for n, p in sam.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in sam.state_dict().items() if k in names}


def merge_lora(sam) -> None:
    """Fold LoRA updates into the plain qkv weights and remove the wrappers (in place), so the
    result is a standard SAM that loads anywhere (micro-sam's alpha = 1)."""
    import torch

    for block in sam.image_encoder.blocks:
        qkv = block.attn.qkv
        if not hasattr(qkv, "qkv_proj"):
            continue
        base, dim = qkv.qkv_proj, qkv.dim
        with torch.no_grad():
            for part, rows in (("q", slice(0, dim)), ("k", slice(dim, 2 * dim)),
                               ("v", slice(2 * dim, 3 * dim))):
                a = getattr(qkv, f"w_a_linear_{part}", None)
                if a is not None:
                    b = getattr(qkv, f"w_b_linear_{part}")
                    base.weight[rows] += qkv.alpha * (b.weight @ a.weight)
        block.attn.qkv = base
