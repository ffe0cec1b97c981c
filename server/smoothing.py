"""Temporal smoothing of the low-resolution mask, per stream."""

from __future__ import annotations

import torch


def smooth_mask(previous: torch.Tensor | None, current: torch.Tensor, strength: float) -> torch.Tensor:
    """Blend `current` with `previous`, weighting the past by each pixel's uncertainty.

    A confident pixel (p near 0 or 1) follows the new frame at once, so the mask
    does not trail behind motion; an uncertain one (p near 0.5), where flicker
    lives, leans on the previous mask. `strength` 0 turns smoothing off.
    """
    if previous is None or strength <= 0.0 or previous.shape != current.shape:
        return current
    uncertainty = 1.0 - (2.0 * current - 1.0).abs()
    return torch.lerp(current, previous, strength * uncertainty.sqrt())
