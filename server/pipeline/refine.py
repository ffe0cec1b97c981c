"""Upsampling of the low-resolution mask to the frame, optionally guided by the frame's edges."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .filters import box_blur, resize_bilinear
from .frames import resize_frame

# Luma weights (BT.601) for the guidance image: one channel keeps the filter cheap.
_LUMA = (0.299, 0.587, 0.114)
# The filter is solved at about this height, then its linear coefficients are upsampled (He & Sun 2015).
_WORK_HEIGHT = 270
# Regularisation: larger follows frame edges less eagerly but passes less of the frame's noise into the
# mask (1e-3 doubled the flicker that smoothing leaves on real clips; 1e-2 keeps most of the IoU gain).
_EPS = 1e-2


def luma(frame: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) RGB -> (N,1,H,W) luma, as elementwise multiply-adds.

    On CPU a matmul over the permuted pixels or a 1x1 convolution is no faster with one thread
    and took 11 ms instead of 0.2 with two (oneDNN/MKL thread hand-offs on this small op).
    """
    r, g, b = frame.split(1, dim=1)
    return torch.add(torch.add(b * _LUMA[2], g, alpha=_LUMA[1]), r, alpha=_LUMA[0])


def upsample_mask(
    mask: torch.Tensor, pixels: torch.Tensor, frame: torch.Tensor, refine: bool, opencv: bool = True
) -> torch.Tensor:
    """(N,1,h,w) mask -> (N,1,H,W) mask at the size of `frame` ((N,3,H,W) in [0,1]; `pixels` is it in uint8).

    With `refine`, a fast guided filter snaps the soft, blocky edge of the
    upsampled mask to the edges of the frame (hair, shoulders). kornia's
    `guided_blur` computes the same filter but took ~150 ms at 640x480 here;
    running-sum box filters at a reduced size take a few ms. `opencv=False`: the torch kernels even on
    the CPU (see filters.py).
    """
    height, width = frame.shape[-2:]
    if not refine:
        return F.interpolate(mask, size=(height, width), mode="bilinear", align_corners=False)
    factor = max(1, round(height / _WORK_HEIGHT))
    guide = luma(frame)
    if factor > 1:
        low_size = (-(-height // factor), -(-width // factor))
        guide_low = luma(resize_frame(pixels, low_size).float().div_(255.0))
    else:
        low_size, guide_low = (height, width), guide
    mask_low = resize_bilinear(mask, low_size, opencv)
    # The window spans about two model pixels, so an edge can move as far as the model blurred it.
    radius = max(2, round(2 * low_size[0] / mask.shape[-2]))
    stats = box_blur(
        torch.cat([guide_low, mask_low, guide_low * mask_low, guide_low * guide_low], dim=1), radius, opencv
    )
    mean_i, mean_p, mean_ip, mean_ii = stats.split(1, dim=1)
    a = (mean_ip - mean_i * mean_p) / (mean_ii - mean_i * mean_i + _EPS)
    b = mean_p - a * mean_i
    coefficients = box_blur(torch.cat([a, b], dim=1), radius, opencv)
    coefficients = resize_bilinear(coefficients, (height, width), opencv)
    return (coefficients[:, :1] * guide + coefficients[:, 1:]).clamp_(0.0, 1.0)
