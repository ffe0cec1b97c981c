"""Fast box and Gaussian-like filters and bilinear resizes on (N,C,H,W) float tensors, one interface
with two implementations: OpenCV's SIMD kernels for float32 tensors on the CPU, torch everywhere else.

The torch box filter uses running sums, so its cost does not depend on the radius; on the CPU it ran
about 10x faster than `avg_pool2d`, a depthwise conv or kornia's box/Gaussian blur at these window
sizes. OpenCV's is another 4-6x faster than that at 240x320 (0.55 against 3.5 ms for 4 channels, one
thread), and its bilinear upsampling 3x faster than `F.interpolate`. The two agree to float rounding
(tests/test_pipeline.py checks each against the other), except `downscale`, where OpenCV's area average
and torch's antialiased bilinear are different filters of the same purpose. `opencv=False` (or the
`torch_kernels` context) runs the torch implementation on the CPU too.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# The pipeline runs one single-threaded worker per core; OpenCV's own thread pool would oversubscribe the
# cores as torch's did (see workers.worker_layout).
cv2.setNumThreads(1)


_local = threading.local()


def scratch(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array of `shape` for this thread, kept between frames under `name` and its shape (the last
    few): fresh full-size buffers cost more in page faults than the arithmetic on them (3.7 against 0.4 ms
    for a 640x480 plane). Its contents are what the last user left."""
    buffers: dict[tuple[str, tuple[int, ...]], np.ndarray] = getattr(_local, "scratch", None) or {}
    key = (name, shape)
    if key not in buffers:
        if len(buffers) >= 8:
            buffers.clear()
        buffers[key] = np.empty(shape, np.float32)
    _local.scratch = buffers
    return buffers[key]


@contextmanager
def torch_kernels() -> Iterator[None]:
    """On this thread, every kernel here runs its torch implementation even on the CPU: the code CUDA runs,
    for tests that compare whole pipelines."""
    before = getattr(_local, "torch_only", False)
    _local.torch_only = True
    try:
        yield
    finally:
        _local.torch_only = before


def opencv_on(x: torch.Tensor, opencv: bool | None = None) -> bool:
    """Whether `x` goes to OpenCV: on the CPU, unless `opencv` is False or `torch_kernels` is on."""
    if opencv is None:
        opencv = not getattr(_local, "torch_only", False)
    return opencv and x.device.type == "cpu"


def _opencv(x: torch.Tensor, opencv: bool | None, dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> bool:
    return opencv_on(x, opencv) and x.dtype in dtypes and x.dim() == 4


_IMAGES = (torch.float32, torch.uint8)  # what OpenCV's resizes and blends take here


def _planes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`x` made contiguous, and an empty tensor like it (contiguous) for the results."""
    x = x.contiguous()
    return x, torch.empty_like(x, memory_format=torch.contiguous_format)


def _box_1d(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    k = 2 * radius + 1
    pad = [0, 0, 0, 0]
    pad[(3 - dim) * 2 : (3 - dim) * 2 + 2] = [radius + 1, radius]  # F.pad lists the last dim first
    sums = F.pad(x, pad, mode="replicate").cumsum(dim)
    n = sums.shape[dim]
    return (sums.narrow(dim, k, n - k) - sums.narrow(dim, 0, n - k)) / k


def box_blur(x: torch.Tensor, radius: int, opencv: bool | None = None) -> torch.Tensor:
    """Mean over a (2r+1)x(2r+1) window, borders replicated (`opencv=False`: torch's running sums even on
    the CPU, the implementation CUDA runs)."""
    if radius < 1:
        return x
    if _opencv(x, opencv):
        x, out = _planes(x)
        k = 2 * radius + 1
        for plane, result in zip(x.flatten(0, 1), out.flatten(0, 1), strict=True):
            cv2.boxFilter(plane.numpy(), -1, (k, k), dst=result.numpy(), borderType=cv2.BORDER_REPLICATE)
        return out
    return _box_1d(_box_1d(x, radius, 2), radius, 3)


def _resize_planes(x: torch.Tensor, size: tuple[int, int], interpolation: int) -> torch.Tensor:
    out = torch.empty((*x.shape[:2], *size), dtype=x.dtype)
    for plane, result in zip(x.flatten(0, 1), out.flatten(0, 1), strict=True):
        result_array: np.ndarray = result.numpy()
        cv2.resize(plane.numpy(), (size[1], size[0]), dst=result_array, interpolation=interpolation)
    return out


def _interpolate(x: torch.Tensor, size: tuple[int, int], antialias: bool) -> torch.Tensor:
    """F.interpolate for float tensors, and for uint8 ones through float (CUDA has no uint8 bilinear)."""
    if x.dtype != torch.uint8:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)
    scaled = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=antialias)
    return scaled.round_().clamp_(0, 255).to(torch.uint8)


def resize_bilinear(x: torch.Tensor, size: tuple[int, int], opencv: bool | None = None) -> torch.Tensor:
    """`x` (float32 or uint8) resized to `size` (H, W) bilinearly, pixel centres aligned as
    `F.interpolate(align_corners=False)` does (no antialiasing: for upsampling and mild downsampling)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if _opencv(x, opencv, _IMAGES):
        return _resize_planes(x, size, cv2.INTER_LINEAR)
    return _interpolate(x, size, antialias=False)


def downscale(x: torch.Tensor, size: tuple[int, int], opencv: bool | None = None) -> torch.Tensor:
    """`x` (float32 or uint8) shrunk to `size` (H, W) without aliasing: OpenCV's area average on the CPU,
    antialiased bilinear (a triangle filter as wide as the scale) in torch; a growing side is bilinear."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if _opencv(x, opencv, _IMAGES):
        # OpenCV's area average is fast for one whole factor both ways only (~0.03 ms for 640x480 to 320x240;
        # ~1 ms to 256x256, or to 320x480): average by the nearest such factor, then bilinear for the rest
        # (a little up or under 2x down).
        height, width = x.shape[-2:]
        factor = _whole_factor(height, width, min(height / size[0], width / size[1]))
        if factor > 1:
            x = _resize_planes(x, (height // factor, width // factor), cv2.INTER_AREA)
        return resize_bilinear(x, size, opencv)
    return _interpolate(x, size, antialias=True)


def downscale_antialiased(x: torch.Tensor, size: tuple[int, int], opencv: bool | None = None) -> torch.Tensor:
    """`x` (uint8) resized to `size` (H, W) by antialiased bilinear on every device, for shrinking by
    1-2x, where `downscale`'s fast CPU path aliases: on the CPU torch's own uint8 kernels (SIMD for
    channels-last RGB; "opencv" here names the CPU's fast path), elsewhere or with `opencv=False` through
    float, as CUDA needs."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if opencv_on(x, opencv):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return _interpolate(x, size, antialias=True)


def _whole_factor(height: int, width: int, ratio: float) -> int:
    """The whole factor nearest `ratio` (or below it) that divides both sides."""
    factor = max(1, round(ratio))
    while height % factor or width % factor:
        factor -= 1
    return factor


def blend(
    background: torch.Tensor, foreground: torch.Tensor, weight: torch.Tensor, opencv: bool | None = None
) -> torch.Tensor:
    """uint8 (N,C,H,W) planes: `foreground` where `weight` (N,1,H,W, in [0,1]) is 1, `background` where it is 0,
    rounded. `background` may be (N,C,1,1), one value per plane."""
    background = background.expand_as(foreground)
    if _opencv(foreground, opencv, (torch.uint8,)) and weight.dtype == torch.float32:
        out = torch.empty_like(foreground, memory_format=torch.contiguous_format)
        w = weight.contiguous().numpy()
        for n in range(foreground.shape[0]):
            inverse = 1.0 - w[n, 0]
            for c in range(foreground.shape[1]):
                cv2.blendLinear(
                    np.ascontiguousarray(foreground[n, c].numpy()),
                    np.ascontiguousarray(background[n, c].numpy()),
                    w[n, 0],
                    inverse,
                    dst=out[n, c].numpy(),
                )
        return out
    mixed = torch.lerp(background.to(weight.dtype), foreground.to(weight.dtype), weight)
    return mixed.round_().clamp_(0, 255).to(torch.uint8)


def max_filter(x: torch.Tensor, radius: int, opencv: bool | None = None) -> torch.Tensor:
    """Maximum over a (2r+1)x(2r+1) window (a dilation), the frame's edge not counted (`opencv=False`:
    torch's max pooling even on the CPU; OpenCV's dilation took 0.03 ms at 60x80 against 0.18)."""
    if radius < 1:
        return x
    if _opencv(x, opencv):
        x, out = _planes(x)
        kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
        for plane, result in zip(x.flatten(0, 1), out.flatten(0, 1), strict=True):
            cv2.dilate(plane.numpy(), kernel, dst=result.numpy())  # its default border ignores outside pixels
        return out
    return F.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)


def boundary(person: torch.Tensor, radius: int, opencv: bool | None = None) -> torch.Tensor:
    """(N,1,H,W) bool `person` -> (N,1,H,W) bool: the pixels within `radius` of where it changes (a dilation
    that differs from the erosion), the frame's edge not counted. On the CPU one morphological gradient on
    bytes (0.6 ms on floats with max_filter at 240x320, 10x less this way)."""
    if opencv_on(person, opencv):
        out = torch.empty(person.shape, dtype=torch.bool)
        kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
        for plane, result in zip(person.contiguous().flatten(0, 1), out.flatten(0, 1), strict=True):
            gradient = cv2.morphologyEx(plane.numpy().view(np.uint8), cv2.MORPH_GRADIENT, kernel)
            np.greater(gradient, 0, out=result.numpy())
        return out
    solid = person.float()
    return max_filter(solid, radius, opencv) != 1.0 - max_filter(1.0 - solid, radius, opencv)


def gaussian_blur(x: torch.Tensor, sigma: float, opencv: bool | None = None) -> torch.Tensor:
    """Approximate Gaussian blur: three box passes of matching variance (central limit)."""
    radius = round((math.sqrt(4.0 * sigma * sigma + 1.0) - 1.0) / 2.0)
    for _ in range(3):
        x = box_blur(x, radius, opencv)
    return x
