"""Replacing the background: frame (1,3,H,W) + mask (1,1,H,W) -> composited frame, all in [0,1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .filters import box_blur, gaussian_blur


def blurred_background(pixels: torch.Tensor, image: torch.Tensor, mask: torch.Tensor, strength: float) -> torch.Tensor:
    """The frame's background blurred with sigma = strength x H / 20, the person left out; (N,3,H,W) in [0,1].

    A plain blur smears the person into the background and leaves a halo around
    them; a normalised blur (blur(frame x bg) / blur(bg)) averages background
    pixels only. It runs at a reduced resolution, where a large blur is cheap;
    there, pixels next to the person are left out too (their shrunk value mixes
    in the person), and the normalisation fills them from their neighbours.
    `pixels` is the uint8 frame (fast resizes on CPU), `image` the same in float.
    """
    height, width = pixels.shape[-2:]
    sigma = strength * height / 20.0
    if sigma < 0.5:
        return image
    factor = max(1, int(sigma / 1.5))  # keep about 1.5 px of sigma at the reduced size
    size = (max(1, -(-height // factor)), max(1, -(-width // factor)))
    frame = resize_frame(pixels, size).float().div_(255.0) if factor > 1 else image
    person = F.interpolate(mask, size=size, mode="bilinear", align_corners=False, antialias=True) if factor > 1 else mask
    if factor > 1:
        person = F.max_pool2d(person, 3, stride=1, padding=1)
    background = 1.0 - person
    stacked = gaussian_blur(torch.cat([frame * background, background, frame], dim=1), sigma / factor)
    numerator, weight, plain = stacked[:, :3], stacked[:, 3:4], stacked[:, 4:]
    # Deep inside the person there is no background to average: fall back to the plain blur (hidden anyway).
    result = torch.where(weight > 1e-3, numerator / weight.clamp_min(1e-3), plain)
    if factor == 1:
        return result
    if result.device.type == "cpu":
        # uint8 channels-last bilinear upsampling is ~5x faster than float on CPU; the blur hides the rounding.
        small = result.mul(255.0).round_().to(torch.uint8).contiguous(memory_format=torch.channels_last)
        up = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
        return planar(up).float().div_(255.0)
    return F.interpolate(result, size=(height, width), mode="bilinear", align_corners=False)


def planar(image: torch.Tensor) -> torch.Tensor:
    """A (1,C,H,W) channels-last tensor copied to plain NCHW memory; on CPU, unbinding and stacking the
    channels is ~4x faster than .contiguous(), whose strided copy is slow for small C."""
    return torch.stack(image[0].unbind(0)).unsqueeze(0)


def resize_frame(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 frame (float on CUDA, where uint8 resizing is missing)."""
    if tuple(pixels.shape[-2:]) == tuple(size):
        return pixels
    if pixels.device.type != "cpu":
        pixels = pixels.float()
    return F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)


def cover_fit(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Scale (1,3,h,w) to cover HxW keeping its aspect ratio, then crop the centre."""
    h, w = image.shape[-2:]
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    resized = F.interpolate(image, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=scale < 1)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized[..., top : top + height, left : left + width]


def light_wrap(frame: torch.Tensor, mask: torch.Tensor, background: torch.Tensor, amount: float) -> torch.Tensor:
    """Let the background's light spill onto the person's edge, as a lens would."""
    if amount <= 0.0:
        return frame
    height = frame.shape[-2]
    radius = max(1, height // 60)
    soft = box_blur(mask, radius)
    spill = amount * mask * (1.0 - soft).clamp_min(0.0) * 2.0
    return torch.lerp(frame, background, spill.clamp(0.0, 1.0))


def composite(frame: torch.Tensor, mask: torch.Tensor, background: torch.Tensor, wrap: float) -> torch.Tensor:
    """Person over background, with optional light wrap."""
    person = light_wrap(frame, mask, background, wrap)
    return torch.lerp(background, person, mask)
