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
So on the CPU, `over` takes the background where the weight is 0 and the frame where it and the mask are 1,
and blends the estimate only at the pixels between (about 1% of a frame).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch

from .filters import blend, box_blur, downscale, opencv_on, resize_bilinear, scratch

# The reduced grid's height (rows), and the two passes' radii on it: at 480 rows (cells of 6 px), windows
# of 78 and 30 frame pixels. The first reaches past the soft edge into the person and the background, the
# second keeps the estimate local (on a 14 px ramp between two flat colours, radii of 6 and 2 left a mean
# error of 1.5 grey levels, 4 and 1 left 3.0, one pass 14.7; a full-size grid with the paper's 90 and 6 px,
# 1.5). On the CPU the grid's arrays stay under glibc's 128 KiB mmap threshold up to 1080p: at 120 rows the
# same arithmetic took 4x as long, most of it in page faults.
_WORK_HEIGHT = 80
_RADII = (6, 2)
_TINY = 1e-4  # a weight below this is no weight (far from the person, Fm is never seen)
_ROW = 4096  # pixels per row of the band's sampling map


def foreground(
    y: torch.Tensor,
    uv: torch.Tensor,
    mask: torch.Tensor,
    chroma_mask: torch.Tensor | None = None,
    opencv: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Y (N,1,H,W) and UV (N,2,h,w) uint8 planes and the mask (N,1,H,W) in [0,1] -> the planes with the
    person's estimated colour where 0 < mask < 1 (the frame's own where it is 1), uint8, to be blended with
    that mask; `chroma_mask`: the mask at the chroma's size as compositing shrinks it (made here if None)."""
    grid, chroma_mask = _grid(y, uv, mask, chroma_mask, opencv)
    if opencv_on(y, opencv) and mask.dtype == torch.float32 and chroma_mask.dtype == torch.float32:
        return _foreground_opencv(y, uv, mask, chroma_mask, grid)
    # Sampled, not averaged: the grid's alpha and colours come from the same pixels, and the passes' box
    # filters average them next (an area average also cost 3x as much on the CPU).
    alpha = resize_bilinear(chroma_mask, grid, opencv)
    image = torch.cat([resize_bilinear(y, grid, opencv), resize_bilinear(uv, grid, opencv)], dim=1).float()
    f_hat, difference = _local_means(image, alpha, opencv)
    fy = _fuse(y, mask, f_hat[:, :1], difference[:, :1], opencv)
    return fy, _fuse(uv, chroma_mask, f_hat[:, 1:], difference[:, 1:], opencv)


def over(
    background: tuple[torch.Tensor, torch.Tensor],
    y: torch.Tensor,
    uv: torch.Tensor,
    mask: torch.Tensor,
    weights: tuple[torch.Tensor, torch.Tensor],
    chroma_mask: torch.Tensor | None = None,
    opencv: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The person, in the colour `foreground` estimates, over `background` (Y and UV uint8 planes, or (N,C,1,1)
    values), blended with `weights` (the Y and the chroma's, (N,1,H,W) and (N,1,h,w) in [0,1]): the composited
    Y and UV uint8 planes. On the CPU the estimate is made only where the mask is below 1 and the weight
    above 0, and blended from float there (see `_over_opencv`)."""
    grid, chroma_mask = _grid(y, uv, mask, chroma_mask, opencv)
    tensors = (mask, chroma_mask, *weights)
    if opencv_on(y, opencv) and all(t.dtype == torch.float32 for t in tensors):
        return _foreground_opencv(y, uv, mask, chroma_mask, grid, (background, weights))
    fy, fuv = foreground(y, uv, mask, chroma_mask, opencv)
    return blend(background[0], fy, weights[0], opencv), blend(background[1], fuv, weights[1], opencv)


def _grid(
    y: torch.Tensor, uv: torch.Tensor, mask: torch.Tensor, chroma_mask: torch.Tensor | None, opencv: bool | None
) -> tuple[tuple[int, int], torch.Tensor]:
    """The reduced grid's size (rows, columns) for `y`'s size, and the chroma's mask (made if None)."""
    height, width = y.shape[-2:]
    factor = max(1, round(height / _WORK_HEIGHT))
    if chroma_mask is None:
        chroma_mask = downscale(mask, (uv.shape[-2], uv.shape[-1]), opencv)
    return (-(-height // factor), -(-width // factor)), chroma_mask


_Over = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # background, weights


def _foreground_opencv(
    y: torch.Tensor,
    uv: torch.Tensor,
    mask: torch.Tensor,
    chroma_mask: torch.Tensor,
    grid: tuple[int, int],
    over: _Over | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`foreground` (or, with `over`, `over`) on the CPU: NumPy and OpenCV throughout (torch's per-operation
    cost, and its copies, were a third of the time)."""
    fy = torch.empty(y.shape, dtype=torch.uint8)
    fuv = torch.empty(uv.shape, dtype=torch.uint8)
    size = (grid[1], grid[0])
    for n in range(y.shape[0]):
        planes = [y[n, 0].numpy(), *(plane.numpy() for plane in uv[n])]
        image = [cv2.resize(plane, size, interpolation=cv2.INTER_LINEAR).astype(np.float32) for plane in planes]
        chroma_alpha = np.ascontiguousarray(chroma_mask[n, 0].numpy())
        means = _local_means_opencv(image, cv2.resize(chroma_alpha, size, interpolation=cv2.INTER_LINEAR))
        alpha = np.ascontiguousarray(mask[n, 0].numpy())
        if over is None:
            _fuse_opencv(planes[:1], alpha, means[:1], fy[n].numpy())
            _fuse_opencv(planes[1:], chroma_alpha, means[1:], fuv[n].numpy())
            continue
        # Each weight the very array of its mask where it is the mask (no light wrap).
        (background_y, background_uv), (weight_y, weight_uv) = over
        luma_weight = alpha if weight_y is mask else np.ascontiguousarray(weight_y[n, 0].numpy())
        chroma_weight = chroma_alpha if weight_uv is chroma_mask else np.ascontiguousarray(weight_uv[n, 0].numpy())
        _over_opencv(planes[:1], alpha, means[:1], fy[n].numpy(), (_plane_values(background_y, n), luma_weight))
        _over_opencv(
            planes[1:], chroma_alpha, means[1:], fuv[n].numpy(), (_plane_values(background_uv, n), chroma_weight)
        )
    return fy, fuv


def _plane_values(background: torch.Tensor, n: int) -> list[np.ndarray | float]:
    """The background's planes of image `n`: (H,W) uint8 arrays, or one value each where it is (N,C,1,1)."""
    if background.shape[-2:] == (1, 1):
        return [float(value) for value in background[min(n, background.shape[0] - 1), :, 0, 0]]
    return [np.ascontiguousarray(plane.numpy()) for plane in background[n]]


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
    alpha = alpha.float()
    f_hat = resize_bilinear(f_hat, size, opencv)
    base = resize_bilinear(difference, size, opencv).mul_(alpha).add_(f_hat)
    return torch.lerp(base, plane.float(), alpha).round_().clamp_(0, 255).to(torch.uint8)


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    window = 2 * radius + 1
    return cv2.boxFilter(x, -1, (window, window), borderType=cv2.BORDER_REPLICATE)


def _local_means_opencv(image: list[np.ndarray], alpha: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """`_local_means` on the CPU, the (h,w) float32 planes of one image on the grid and its (h,w) alpha: per
    plane, Fm and Fm - Bm as (h,w) arrays (2-D arrays: the per-operation cost is most of the time here)."""
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


def _fuse_opencv(
    planes: list[np.ndarray], alpha: np.ndarray, means: list[tuple[np.ndarray, np.ndarray]], out: np.ndarray
) -> None:
    """`_fuse` on the CPU: (H,W) uint8 planes of one size, their (H,W) alpha, each plane's grid means -> `out`
    (C,H,W) uint8. OpenCV's SIMD kernels in this thread's scratch buffers (fresh full-size buffers cost more in
    page faults than the arithmetic: 3.7 against 0.4 ms for a 640x480 plane)."""
    size = alpha.shape
    upsampled, base, inverse = scratch("fuse", (3, *size))
    np.subtract(1.0, alpha, out=inverse)
    for channel, (plane, (f_hat, difference)) in enumerate(zip(planes, means, strict=True)):
        cv2.resize(f_hat, (size[1], size[0]), dst=upsampled, interpolation=cv2.INTER_LINEAR)
        cv2.resize(difference, (size[1], size[0]), dst=base, interpolation=cv2.INTER_LINEAR)
        cv2.multiply(base, alpha, dst=base)
        cv2.add(base, upsampled, dst=base)
        np.copyto(upsampled, plane, casting="unsafe")  # the frame's values, as float
        cv2.blendLinear(upsampled, base, alpha, inverse, dst=upsampled)
        # Negative values to 0 first: convertScaleAbs rounds and saturates at 255, but takes |x|.
        np.maximum(upsampled, 0.0, out=upsampled)
        cv2.convertScaleAbs(upsampled, dst=out[channel])


def _over_opencv(
    planes: list[np.ndarray],
    alpha: np.ndarray,
    means: list[tuple[np.ndarray, np.ndarray]],
    out: np.ndarray,
    over: tuple[list[np.ndarray | float], np.ndarray],
) -> None:
    """`_fuse_opencv` blended over the background, working only where it must: the background where the
    weight is 0, the frame's pixel where weight and mask are 1 (F is I there), and the estimate blended from
    float only at the pixels between (about 1% of a frame without light wrap): 0.4 against 1.0 ms for a
    640x480 Y plane blended whole."""
    backgrounds, weight = over
    solid = weight >= 1.0
    if weight is not alpha:
        solid &= alpha >= 1.0
    # Solid pixels have a weight above 0, so "shown but not solid" is the exclusive or. (NumPy's booleans:
    # its nonzero() on OpenCV's 0/255 masks took 8x as long.)
    band = np.flatnonzero((weight > 0.0) ^ solid)
    sample = _bilinear_sampler(band, alpha.shape, means[0][0].shape)
    a, w = alpha.ravel()[band], weight.ravel()[band]
    for channel, (plane, (f_hat, difference)) in enumerate(zip(planes, means, strict=True)):
        background, result = backgrounds[channel], out[channel]
        if isinstance(background, float):
            result.fill(int(background))
            behind: np.ndarray | float = background
        else:
            np.copyto(result, background)
            behind = background.ravel()[band].astype(np.float32)
        cv2.copyTo(plane, solid.view(np.uint8), result)
        if band.size:
            estimate = sample(f_hat)
            estimate += a * sample(difference)  # Fm + a(Fm - Bm)
            estimate += a * (plane.ravel()[band] - estimate)  # lerp towards the frame's pixel by a
            mixed = behind + w * (estimate - behind)
            result.ravel()[band] = np.clip(np.rint(mixed), 0, 255)


def _bilinear_sampler(
    pixels: np.ndarray, size: tuple[int, int], grid: tuple[int, ...]
) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a `grid`-sized float32 array to its values at the flat `pixels` (at least one) of a `size` image,
    sampled bilinearly as cv2.resize's INTER_LINEAR upsampling to `size` would give them (pixel centres
    aligned, edges repeated). OpenCV's remap on a map of the pixels' positions: a third of the time of
    NumPy's four gathers and lerps per array (0.08 against 0.23 ms for two arrays at 8,000 pixels)."""
    rows, cols = np.divmod(pixels, size[1])
    # The positions as rows of _ROW (remap's images are under 32,767 a side), the last row padded.
    count = pixels.size
    flat = np.zeros((-(-count // _ROW) * _ROW, 2), np.float32)
    flat[:count, 0] = (cols + 0.5) * (grid[1] / size[1]) - 0.5
    flat[:count, 1] = (rows + 0.5) * (grid[0] / size[0]) - 0.5
    where = flat.reshape(-1, _ROW, 2)

    def sample(values: np.ndarray) -> np.ndarray:
        return cv2.remap(values, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).ravel()[:count]  # type: ignore[call-overload]  # stubs miss None

    return sample
