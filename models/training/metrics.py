"""Segmentation quality: person IoU, boundary F-score and temporal flicker."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def iou(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """IoU of the person class for boolean (H,W) masks; 1.0 when both are empty."""
    union = (prediction | target).sum().item()
    return 1.0 if union == 0 else (prediction & target).sum().item() / union


def _boundary(mask: torch.Tensor) -> torch.Tensor:
    m = mask[None, None].float()
    eroded = -F.max_pool2d(-m, 3, stride=1, padding=1)
    return (m - eroded)[0, 0] > 0


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Square dilation, as a row max-pool then a column one (2k comparisons per pixel instead of k^2)."""
    k = 2 * radius + 1
    m = F.max_pool2d(mask[None, None].float(), (1, k), stride=1, padding=(0, radius))
    return F.max_pool2d(m, (k, 1), stride=1, padding=(radius, 0))[0, 0] > 0


def boundary_f(prediction: torch.Tensor, target: torch.Tensor, tolerance: float = 0.0075) -> float:
    """Boundary F-measure (as in DAVIS): boundaries match within `tolerance` x the image diagonal."""
    height, width = target.shape
    radius = max(1, round(tolerance * (height**2 + width**2) ** 0.5))
    pred_b, true_b = _boundary(prediction), _boundary(target)
    n_pred, n_true = pred_b.sum().item(), true_b.sum().item()
    if n_pred == 0 and n_true == 0:
        return 1.0
    if n_pred == 0 or n_true == 0:
        return 0.0
    precision = (pred_b & _dilate(true_b, radius)).sum().item() / n_pred
    recall = (true_b & _dilate(pred_b, radius)).sum().item() / n_true
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def flicker(previous: torch.Tensor, current: torch.Tensor) -> float:
    """Mean absolute change of the probability between two consecutive frames."""
    return (current.float() - previous.float()).abs().mean().item()
