"""Replacing the background: frame (1,3,H,W) + mask (1,1,H,W) -> composited frame, all in [0,1]."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from .backgrounds import BackgroundStore
from .config import SessionConfig
from .filters import box_blur, gaussian_blur
from .frames import StreamState, cover_fit, planar, resize_frame


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
    person = (
        F.interpolate(mask, size=size, mode="bilinear", align_corners=False, antialias=True) if factor > 1 else mask
    )
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


def compose(
    pixels: torch.Tensor,
    image: torch.Tensor,
    mask: torch.Tensor,
    state: StreamState,
    config: SessionConfig,
    backgrounds: BackgroundStore,
) -> tuple[torch.Tensor, StreamState]:
    """The frame as the session's mode shows it, and the stream's state with the background cache updated."""
    if config.mode == "mask":
        return mask.expand(-1, 3, -1, -1), state
    if config.mode == "blur":
        background = blurred_background(pixels, image, mask, config.blur)
    elif config.mode == "color":
        background = torch.tensor(config.rgb(), device=image.device, dtype=image.dtype).view(1, 3, 1, 1) / 255.0
        background = background.expand_as(image)
    else:  # image
        background, state = _background_image(config.image, image, state, backgrounds)
    return composite(image, mask, background, config.light_wrap), state


def _background_image(
    name: str, image: torch.Tensor, state: StreamState, backgrounds: BackgroundStore
) -> tuple[torch.Tensor, StreamState]:
    """The named image cover-fitted to the frame; fitted once per stream, name and size, then cached."""
    key = (name, tuple(image.shape[-2:]))
    if state.background_key == key and state.background is not None:
        return state.background, state
    picture = torch.from_numpy(backgrounds.get(name)).to(image.device)
    picture = picture.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    fitted = cover_fit(picture, image.shape[-2], image.shape[-1]).contiguous()
    return fitted, replace(state, background_key=key, background=fitted)
