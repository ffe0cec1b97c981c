"""The training loss: BCE per pixel plus Dice over each image."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE for every pixel plus Dice for the overlap as a whole (robust to small people in big frames)."""
    return F.binary_cross_entropy_with_logits(logits, target) + dice_loss(logits, target)
