"""Upsampling of the low-resolution mask to the frame, optionally guided by the frame's edges."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .filters import box_blur, downscale, opencv_on, resize_bilinear, scratch

# The filter is solved at about this height, then its linear coefficients are upsampled (He & Sun 2015).
_WORK_HEIGHT = 270
# Regularisation: larger follows frame edges less eagerly but passes less of the frame's noise into the
# mask (1e-3 doubled the flicker that smoothing leaves on real clips; 1e-2 keeps most of the IoU gain).
_EPS = 1e-2
# Limited-range luma: Y = 16 + 219 x luma. The filter runs on luma in [0,1], as it was tuned.
_BLACK, _RANGE = 16.0, 219.0
# The refined mask's edge profile: the filtered mask's ramp, about 20 px wide at 800 px (the model's blur,
# upsampled), is made _STEEPNESS times steeper about _CENTRE: 0 below 0.45, 1 above 0.65. Against hand-drawn
# masks (portraits-dev) the soft ramp left the old background in a wide fringe, and its 0.5 level lay about a
# pixel outside the true edge; a centre above 0.5 is nearer. DAVIS's masks (fullbody-dev) are drawn wider: at
# 0.6 their IoU fell 0.858 -> 0.846, at 0.55 to 0.855 (portraits, 200 images, IoU / edge error / outer half:
# 0.9546 / 28.6 / 33.7 at 0.6, 0.9539 / 29.1 / 38.5 at 0.55, 0.9524 / 30.3 / 43.9 at 0.5).
_CENTRE, _STEEPNESS = 0.55, 5.0


def upsample_mask(mask: torch.Tensor, y: torch.Tensor, refine: bool, opencv: bool | None = None) -> torch.Tensor:
    """(N,1,h,w) mask -> (N,1,H,W) mask at the size of the frame whose Y plane is `y` ((N,1,H,W) uint8).

    With `refine`, a fast guided filter snaps the soft, blocky edge of the
    upsampled mask to the edges of the frame (hair, shoulders), with luma as its
    guide, and the edge's ramp is tightened (see _STEEPNESS). kornia's `guided_blur`
    computes the same filter but took ~150 ms at 640x480 here; box filters at a
    reduced size take a few ms. `opencv=False`: the torch kernels even on the CPU
    (see filters.py).
    """
    height, width = y.shape[-2:]
    if not refine:
        return resize_bilinear(mask.float(), (height, width), opencv)
    factor = max(1, round(height / _WORK_HEIGHT))
    low_size = (-(-height // factor), -(-width // factor))
    # The window spans about two model pixels, so an edge can move as far as the model blurred it.
    radius = max(2, round(2 * low_size[0] / mask.shape[-2]))
    if opencv_on(y, opencv) and y.dtype == torch.uint8:
        return _guided_opencv(mask.float(), y, low_size, radius)
    guide_low = downscale(y, low_size, opencv).float().sub_(_BLACK).div_(_RANGE)
    mask_low = resize_bilinear(mask.float(), low_size, opencv)
    stats = box_blur(
        torch.cat([guide_low, mask_low, guide_low * mask_low, guide_low * guide_low], dim=1), radius, opencv
    )
    mean_i, mean_p, mean_ip, mean_ii = stats.split(1, dim=1)
    a = (mean_ip - mean_i * mean_p) / (mean_ii - mean_i * mean_i + _EPS)
    b = mean_p - a * mean_i
    # Fold luma's scale and the edge profile ((p - centre) x steepness + 0.5) into the coefficients, so the
    # full-size work is one multiply-add on the Y plane.
    slope, offset = a * (_STEEPNESS / _RANGE), (b - a * (_BLACK / _RANGE) - _CENTRE) * _STEEPNESS + 0.5
    coefficients = box_blur(torch.cat([slope, offset], dim=1), radius, opencv)
    coefficients = resize_bilinear(coefficients, (height, width), opencv)
    # In place on the upsampled slope, the Y plane promoted as it is read: no float copy of the frame's luma.
    return coefficients[:, :1].mul_(y).add_(coefficients[:, 1:]).clamp_(0.0, 1.0)


def _guided_opencv(mask: torch.Tensor, y: torch.Tensor, low_size: tuple[int, int], radius: int) -> torch.Tensor:
    """`upsample_mask`'s refinement on the CPU: NumPy and OpenCV on 2-D planes in this thread's scratch
    buffers (torch's per-operation cost and fresh buffers were a third of its 1.9 ms at 640x480). The guide
    stays in Y's own units, with the regularisation scaled to match (the filter is otherwise the same)."""
    height, width = y.shape[-2:]
    out = torch.empty((y.shape[0], 1, height, width), dtype=torch.float32)
    guide = downscale(y, low_size)
    window = (2 * radius + 1, 2 * radius + 1)
    low = scratch("guided-low", (6, *low_size))
    full = scratch("guided-full", (3, height, width))
    for n in range(y.shape[0]):
        mean_i, mean_p, mean_ip, mean_ii, slope, offset = low
        np.copyto(mean_i, guide[n, 0].numpy(), casting="unsafe")
        cv2.resize(mask[n, 0].numpy(), (low_size[1], low_size[0]), dst=mean_p, interpolation=cv2.INTER_LINEAR)
        cv2.multiply(mean_i, mean_p, dst=mean_ip)
        cv2.multiply(mean_i, mean_i, dst=mean_ii)
        for plane in (mean_i, mean_p, mean_ip, mean_ii):
            cv2.boxFilter(plane, -1, window, dst=plane, borderType=cv2.BORDER_REPLICATE)
        # In Y's units the coefficient per Y level is cov / (var + eps x 219^2); times the steepness it is the
        # slope, and the offset (mean_p - coefficient x mean_i - centre) x steepness + 0.5, as the torch path
        # folds them.
        cv2.multiply(mean_i, mean_p, dst=slope)
        cv2.subtract(mean_ip, slope, dst=slope)
        cv2.multiply(mean_i, mean_i, dst=offset)
        cv2.subtract(mean_ii, offset, dst=offset)
        offset += _EPS * _RANGE * _RANGE
        cv2.divide(slope, offset, dst=slope, scale=_STEEPNESS)
        cv2.multiply(slope, mean_i, dst=offset)
        cv2.addWeighted(mean_p, _STEEPNESS, offset, -1.0, 0.5 - _CENTRE * _STEEPNESS, dst=offset)
        cv2.boxFilter(slope, -1, window, dst=slope, borderType=cv2.BORDER_REPLICATE)
        cv2.boxFilter(offset, -1, window, dst=offset, borderType=cv2.BORDER_REPLICATE)
        slope_full, offset_full, luma = full
        cv2.resize(slope, (width, height), dst=slope_full, interpolation=cv2.INTER_LINEAR)
        cv2.resize(offset, (width, height), dst=offset_full, interpolation=cv2.INTER_LINEAR)
        np.copyto(luma, y[n, 0].numpy(), casting="unsafe")
        result = out[n, 0].numpy()
        cv2.multiply(slope_full, luma, dst=result)
        cv2.add(result, offset_full, dst=result)
        np.clip(result, 0.0, 1.0, out=result)
    return out
