"""Temporal smoothing of the low-resolution mask, per stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .config import SessionConfig

# Changes smaller than about this are treated as noise rather than motion.
_NOISE_LEVEL = 0.2
# Where the previous mask was moved along a flow that checks out, a change is noise up to this much: it is
# the model flickering, not the person moving (that the warp took care of).
_NOISE_LEVEL_TRACKED = 0.8


@dataclass(frozen=True)
class SmoothingState:
    """What smoothing keeps of a stream's last frame."""

    mask: torch.Tensor | None = None  # the smoothed low-resolution mask
    key: tuple | None = None  # (frame size, model) it was made for: smoothing restarts when it changes
    grey: np.ndarray | None = None  # the frame's luma at mask size, for the flow to the next
    since_model: int = 0  # frames since the model last ran (config.keyframes): 0 on a frame it ran on
    config: SessionConfig | None = None  # the session config the mask was made with: a change runs the model again

    @property
    def model_ran(self) -> bool:
        """Whether the model made this frame's mask (rather than the last mask moved along the flow)."""
        return self.since_model == 0


def smooth_mask(
    previous: torch.Tensor | None, current: torch.Tensor, strength: float, tracked: torch.Tensor | None = None
) -> torch.Tensor:
    """Blend `current` with `previous`, leaning on the past only where the new value is doubtful.

    A pixel is doubtful when the model is uncertain (p near 0.5) or when it
    barely changed (a small change is noise, motion moves a pixel a long way).
    A confident pixel that changed a lot follows the new frame at once, so the
    mask does not trail behind motion. `strength` 0 turns smoothing off.
    `tracked`: (1,1,h,w) bool, where `previous` was warped along a flow that passed the
    photometric check (`motion.reproduces`); there a large change is more likely the model's flicker.
    """
    if previous is None or strength <= 0.0 or previous.shape != current.shape:
        return current
    uncertainty = (2.0 * current - 1.0).abs_().neg_().add_(1.0)
    # Saturated pixels have an uncertainty of exactly 0, and the CPU's vectorised sqrt of 0 is ~8x slower than
    # of any other value (0.56 against 0.07 ms at 240x320): they are lifted to a value that cannot matter,
    # as the blend takes the larger of the doubt and `stillness`, which is at least exp(-1 / _NOISE_LEVEL).
    doubt = uncertainty.clamp_min_(1e-12).sqrt_()
    noise = _NOISE_LEVEL if tracked is None else torch.where(tracked, _NOISE_LEVEL_TRACKED, _NOISE_LEVEL)
    stillness = (current - previous).abs_().div_(noise).neg_().exp_()
    return torch.lerp(current, previous, torch.maximum(doubt, stillness).mul_(strength))
