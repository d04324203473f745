"""micro-sam's loss: Dice on the best mask + MSE between predicted and measured IoU."""

from __future__ import annotations


def dice_loss(probs, target, eps: float = 1e-6):
    """Per object and mask: 1 - Dice. probs (N, M, H, W) in [0, 1], target (N, 1, H, W)."""
    inter = (probs * target).flatten(2).sum(-1)
    denom = (probs * probs).flatten(2).sum(-1) + (target * target).flatten(2).sum(-1)
    return 1.0 - 2.0 * inter / denom.clamp_min(eps)


def measured_iou(logits, target, eps: float = 1e-7):
    """IoU of the binarised masks (logits > 0) with the target: (N, M), no gradient."""
    import torch

    with torch.no_grad():
        pred = logits > 0
        tgt = target > 0.5
        inter = (pred & tgt).flatten(2).sum(-1).float()
        union = (pred | tgt).flatten(2).sum(-1).float()
        return inter / (union + eps)


def sam_loss(logits, iou_pred, target):
    """Loss of one prompting round.

    logits (N, M, H, W) with M = 1 or 3 masks per object; iou_pred (N, M); target (N, 1, H, W)
    float. Dice is taken on the best of the M masks per object (micro-sam); the IoU head
    regresses the measured IoU of every mask. Returns (loss, mask_loss, iou_loss, iou (N, M)).
    """
    import torch

    dice = dice_loss(torch.sigmoid(logits.float()), target)
    mask_loss = dice.min(dim=1).values.mean()
    iou = measured_iou(logits, target)
    iou_loss = torch.mean((iou_pred.float() - iou) ** 2)
    return mask_loss + iou_loss, mask_loss, iou_loss, iou
