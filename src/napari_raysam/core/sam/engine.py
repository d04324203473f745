"""SAM forward passes for training and evaluation: one prompt encoder + mask decoder call per
image for ALL its sampled objects (batched), repeated over correction rounds. The training
step that wraps them for DDP is ``core.training.step.SamStep``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from napari_raysam.core.sam import prompts
from napari_raysam.core.sam.fast_encoder import run_encoder
from napari_raysam.core.sam.losses import measured_iou, sam_loss


def encode_tiles(sam, rgb: torch.Tensor) -> torch.Tensor:
    """Image embeddings for a batch of (B, H, W, 3) uint8 tiles of the model's input size."""
    x = rgb.to(sam.device).permute(0, 3, 1, 2).float()
    return run_encoder(sam.image_encoder, sam.preprocess(x))  # fused path when no grad


def decode(sam, embedding, points=None, boxes=None, mask_inputs=None, multimask=False):
    """Masks for N prompts on one image: embedding (1, C, h, w); points (coords (N, P, 2),
    labels (N, P)); boxes (N, 4); mask_inputs (N, 1, 4h, 4w) logits. Returns low-res logits
    (N, M, 4h, 4w), full-size logits (N, M, S, S) and predicted IoU (N, M)."""
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=mask_inputs)
    low, iou = sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )
    size = sam.image_encoder.img_size
    full = F.interpolate(low, (size, size), mode="bilinear", align_corners=False)
    return low, full, iou


@dataclass
class RoundsResult:
    loss: torch.Tensor  # mean over rounds
    ious: list  # per round: (N,) measured IoU of the chosen mask


def run_rounds(sam, embedding, masks, first: str, rounds: int, generator,
               first_points=None, box_distortion: float = 0.0,
               use_mask_inputs: bool = False) -> RoundsResult:
    """First prompt (``"point"``: one positive point, multimask, best mask; ``"box"``: single
    mask), then ``rounds`` correction rounds each adding a positive point in missed pixels and
    a negative one in wrongly added pixels, optionally feeding back the previous low-res logits.

    masks: (N, S, S) bool targets. first_points: (N, 2) points for the first round (default:
    random points inside the objects). The chosen mask of a round is the one with the highest
    predicted IoU, as SAM gives users.
    """
    target = masks[:, None].float().to(embedding.device)
    coords = labels = boxes = mask_in = None
    if first == "point":
        pts = first_points if first_points is not None else prompts.random_points(masks, generator)
        coords, labels = pts[:, None].float(), torch.ones(len(masks), 1, dtype=torch.int64)
    else:
        boxes = prompts.boxes_from_masks(masks, box_distortion, generator)
    total, ious = 0.0, []
    for r in range(rounds + 1):
        points = None if coords is None else (coords.to(embedding.device),
                                              labels.to(embedding.device))
        low, full, iou_pred = decode(sam, embedding, points, None if boxes is None else
                                     boxes.to(embedding.device), mask_in,
                                     multimask=(first == "point" and r == 0))
        loss, _, _, iou = sam_loss(full, iou_pred, target)
        total = total + loss
        best = iou_pred.detach().argmax(dim=1)
        rows = torch.arange(len(best), device=best.device)
        ious.append(iou[rows, best].cpu())
        if r == rounds:
            break
        pred = (full.detach()[rows, best] > 0).cpu()
        new_c, new_l = prompts.correction_points(pred, masks.cpu(), generator)
        coords = new_c if coords is None else torch.cat([coords, new_c], dim=1)
        labels = new_l if labels is None else torch.cat([labels, new_l], dim=1)
        mask_in = low.detach()[rows, best][:, None] if use_mask_inputs else None
    return RoundsResult(total / (rounds + 1), ious)


@torch.no_grad()
def evaluate_tile(sam, embedding, masks, rounds: int, generator) -> dict:
    """Measured IoU per object for a centre-point prompt, a box prompt, and the point prompt
    after ``rounds`` corrections; plus the first-round losses (for val_loss)."""
    centres = torch.from_numpy(prompts.centre_points(masks.numpy()))
    point = run_rounds(sam, embedding, masks, "point", rounds, generator, first_points=centres)
    box = run_rounds(sam, embedding, masks, "box", 0, generator)
    target = masks[:, None].float().to(embedding.device)
    _, full, iou_pred = decode(sam, embedding, (centres[:, None].to(embedding.device),
                               torch.ones(len(masks), 1, dtype=torch.int64,
                                          device=embedding.device)), multimask=True)
    loss_point = sam_loss(full, iou_pred, target)[0]
    return {
        "point": point.ious[0], "box": box.ious[0], "corrected": point.ious[-1],
        "loss": 0.5 * (float(loss_point) + float(box.loss)),
    }


__all__ = ["encode_tiles", "decode", "run_rounds", "evaluate_tile", "measured_iou"]
