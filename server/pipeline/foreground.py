"""Clean edges: the person's own colour where the mask is soft, without the old background mixed in.

Where the mask a is between 0 and 1 the frame's pixel mixes the person and the old background,
I = aF + (1-a)B; blended over a new background as it is, its (1-a)B stays: a fringe of the old background
around hair and shoulders. `foreground` estimates F there by blur fusion (Forte & Pitié, "Approximate fast
foreground colour estimation", ICIP 2021): Fm and Bm, the a- and (1-a)-weighted local means of the colour,
give F = Fm + a(I - aFm - (1-a)Bm); a first pass at a large radius estimates F and B everywhere, a second at
a small one averages those. Both passes are linear per channel, so they run on the Y, U and V planes alike.

At reduced cost: Fm and Bm are local means, so both passes run on a reduced grid (about 80 rows, the three
planes on one grid whatever the chroma's size), and only the last formula at each plane's own size,
rewritten F = lerp(Fm + a(Fm - Bm), I, a): two bilinear upsamplings and a few elementwise operations per
plane (OpenCV's on the CPU, torch's elsewhere). Where a is 1, F is I exactly; where a is 0 it is not seen.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import torch

from .filters import box_blur, downscale, opencv_on, resize_bilinear

# The reduced grid's height (rows), and the two passes' radii on it: at 480 rows (cells of 6 px), windows
# of 78 and 30 frame pixels. The first reaches past the soft edge into the person and the background, the
# second keeps the estimate local (on a 14 px ramp between two flat colours, radii of 6 and 2 left a mean
# error of 1.9 grey levels, 4 and 1 left 3.8; a full-size grid with the paper's 90 and 6 px, 1.5). On the
# CPU the grid's arrays stay under glibc's 128 KiB mmap threshold up to 1080p: at 120 rows the same
# arithmetic took 4x as long, most of it in page faults.
_WORK_HEIGHT = 80
_RADII = (6, 2)
_TINY = 1e-4  # a weight below this is no weight (far from the person, Fm is never seen)


def foreground(
    y: torch.Tensor, uv: torch.Tensor, mask: torch.Tensor, opencv: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Y (N,1,H,W) and UV (N,2,h,w) uint8 planes and the mask (N,1,H,W) in [0,1] -> the planes with the
    person's estimated colour where 0 < mask < 1 (the frame's own where it is 1), uint8, to be blended with
    that mask (the chroma with the mask shrunk to its size, as `composite` does)."""
    height, width = y.shape[-2:]
    factor = max(1, round(height / _WORK_HEIGHT))
    grid = (-(-height // factor), -(-width // factor))
    chroma_mask = downscale(mask, (uv.shape[-2], uv.shape[-1]), opencv)
    alpha = downscale(chroma_mask, grid, opencv)
    image = torch.cat([downscale(y, grid, opencv), downscale(uv, grid, opencv)], dim=1).float()
    if opencv_on(y, opencv) and mask.dtype == torch.float32:
        fused = []
        for n in range(y.shape[0]):
            means = _local_means_opencv(image[n].numpy(), alpha[n, 0].numpy())
            fused.append((_fuse_opencv(y[n], mask[n, 0], means[:1]), _fuse_opencv(uv[n], chroma_mask[n, 0], means[1:])))
        return torch.stack([f[0] for f in fused]), torch.stack([f[1] for f in fused])
    f_hat, difference = _local_means(image, alpha, opencv)
    return _fuse(y, mask, f_hat[:, :1], difference[:, :1], opencv), _fuse(
        uv, chroma_mask, f_hat[:, 1:], difference[:, 1:], opencv
    )


def _local_means(image: torch.Tensor, alpha: torch.Tensor, opencv: bool | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Blur fusion's passes on the grid, (N,C,h,w) and (N,1,h,w): the last pass's Fm and Fm - Bm."""
    fore = back = f_hat = b_hat = image
    inverse = 1.0 - alpha
    channels = image.shape[1]
    for k, radius in enumerate(_RADII):
        weight = box_blur(alpha, radius, opencv)  # the (1-a) weight's blur is 1 - this (a box keeps 1 as 1)
        sums = box_blur(torch.cat([fore * alpha, back * inverse], dim=1), radius, opencv)
        f_hat = sums[:, :channels] / weight.clamp_min(_TINY)
        b_hat = sums[:, channels:] / (1.0 - weight).clamp_min(_TINY)
        if k < len(_RADII) - 1:
            residual = image - alpha * f_hat - inverse * b_hat
            fore = (f_hat + alpha * residual).clamp_(0.0, 255.0)
            back = (b_hat + inverse * residual).clamp_(0.0, 255.0)
    return f_hat, f_hat - b_hat


def _fuse(
    plane: torch.Tensor, alpha: torch.Tensor, f_hat: torch.Tensor, difference: torch.Tensor, opencv: bool | None
) -> torch.Tensor:
    """F = lerp(Fm + a(Fm - Bm), I, a) at the plane's size, (N,C,H,W) uint8, Fm and Fm - Bm upsampled to it."""
    size = (plane.shape[-2], plane.shape[-1])
    f_hat = resize_bilinear(f_hat, size, opencv)
    base = resize_bilinear(difference, size, opencv).mul_(alpha).add_(f_hat)
    return torch.lerp(base, plane.float(), alpha).round_().clamp_(0, 255).to(torch.uint8)


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    window = 2 * radius + 1
    return cv2.boxFilter(x, -1, (window, window), borderType=cv2.BORDER_REPLICATE)


def _local_means_opencv(image: np.ndarray, alpha: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """`_local_means` on the CPU, one (C,h,w) image and its (h,w) alpha: per channel, Fm and Fm - Bm as
    (h,w) arrays. NumPy and OpenCV on 2-D arrays: torch's per-operation cost was most of the time here."""
    inverse = 1.0 - alpha
    # The weights' blurs are the same for every channel: their reciprocals once per pass.
    weights = []
    for radius in _RADII:
        weight = _box(alpha, radius)
        weights.append((1.0 / np.maximum(weight, _TINY), 1.0 / np.maximum(1.0 - weight, _TINY)))
    means = []
    for pixels in image:
        fore = back = f_hat = b_hat = pixels
        for k, radius in enumerate(_RADII):
            f_hat = _box(fore * alpha, radius) * weights[k][0]
            b_hat = _box(back * inverse, radius) * weights[k][1]
            if k < len(_RADII) - 1:
                residual = pixels - alpha * f_hat - inverse * b_hat
                fore = np.clip(f_hat + alpha * residual, 0.0, 255.0)
                back = np.clip(b_hat + inverse * residual, 0.0, 255.0)
        means.append((f_hat, f_hat - b_hat))
    return means


def _fuse_opencv(plane: torch.Tensor, alpha: torch.Tensor, means: list[tuple[np.ndarray, np.ndarray]]) -> torch.Tensor:
    """`_fuse` on the CPU for one (C,H,W) plane and its (H,W) alpha, with OpenCV's SIMD kernels, in this
    thread's scratch buffers (fresh full-size buffers cost more in page faults than the arithmetic: 3.7
    against 0.4 ms for a 640x480 plane)."""
    size = (plane.shape[-2], plane.shape[-1])
    out = torch.empty(plane.shape, dtype=torch.uint8)
    upsampled, base, inverse = _scratch(size)
    a = np.ascontiguousarray(alpha.numpy())
    np.subtract(1.0, a, out=inverse)
    for channel, (f_hat, difference) in enumerate(means):
        cv2.resize(f_hat, (size[1], size[0]), dst=upsampled, interpolation=cv2.INTER_LINEAR)
        cv2.resize(difference, (size[1], size[0]), dst=base, interpolation=cv2.INTER_LINEAR)
        cv2.multiply(base, a, dst=base)
        cv2.add(base, upsampled, dst=base)
        np.copyto(upsampled, plane[channel].numpy(), casting="unsafe")  # the frame's values, as float
        cv2.blendLinear(upsampled, base, a, inverse, dst=upsampled)
        # Negative values to 0 first: convertScaleAbs rounds and saturates at 255, but takes |x|.
        np.maximum(upsampled, 0.0, out=upsampled)
        cv2.convertScaleAbs(upsampled, dst=out[channel].numpy())
    return out


_local = threading.local()


def _scratch(size: tuple[int, int]) -> list[np.ndarray]:
    """Three float32 buffers of `size` for this thread, kept between frames (for the last few sizes)."""
    buffers: dict[tuple[int, int], list[np.ndarray]] = getattr(_local, "buffers", None) or {}
    if size not in buffers:
        if len(buffers) >= 4:
            buffers.clear()
        buffers[size] = [np.empty(size, np.float32) for _ in range(3)]
    _local.buffers = buffers
    return buffers[size]
