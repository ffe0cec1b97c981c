"""Replacing the background, plane by plane: Y (1,1,H,W) and UV (1,2,h,w) uint8 + mask (1,1,H,W) in [0,1]
-> the composited planes.

Blending is linear and so is the conversion between RGB and YUV, so blending each plane with the mask at
that plane's size gives the RGB composite, up to rounding and the chroma's coarser mask (which the
encoder's 4:2:0 would bring anyway). With `edges` (the default) the person's planes are first given the
person's own colour where the mask is soft (foreground.py), so no fringe of the old background is blended in.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .backgrounds import BackgroundState, BackgroundStore
from .config import SessionConfig
from .filters import blend, box_blur, downscale, gaussian_blur, max_filter, resize_bilinear
from .foreground import over
from .frames import cover_fit, rgb_to_yuv
from .yuv import RGB_TO_YUV

_NEUTRAL = 128  # U and V of a grey


def blurred_background(
    y: torch.Tensor, uv: torch.Tensor, mask: torch.Tensor, strength: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The frame's background blurred with sigma = strength x H / 20, the person left out, as Y and UV planes.

    A plain blur smears the person into the background and leaves a halo around
    them; a normalised blur (blur(frame x bg) / blur(bg)) averages background
    pixels only. It runs at a reduced resolution, where a large blur is cheap;
    there, pixels next to the person are left out too (their shrunk value mixes
    in the person), and the normalisation fills them from their neighbours. The
    three planes are blurred together at that size, then each is scaled back to its own.
    """
    height, width = y.shape[-2:]
    sigma = strength * height / 20.0
    if sigma < 0.5:
        return y, uv
    factor = max(1, int(sigma / 1.5))  # keep about 1.5 px of sigma at the reduced size
    size = (max(1, -(-height // factor)), max(1, -(-width // factor)))
    frame = torch.cat([downscale(y, size), downscale(uv, size)], dim=1).float()
    person = downscale(mask, size)
    if factor > 1:
        person = max_filter(person, 1)
    background = 1.0 - person
    stacked = gaussian_blur(torch.cat([frame * background, background, frame], dim=1), sigma / factor)
    numerator, weight, plain = stacked[:, :3], stacked[:, 3:4], stacked[:, 4:]
    # Deep inside the person there is no background to average: fall back to the plain blur (hidden anyway).
    result = torch.where(weight > 1e-3, numerator / weight.clamp_min(1e-3), plain)
    # uint8 bilinear upsampling is several times faster than float's on the CPU; the blur hides the rounding.
    small = result.round_().clamp_(0, 255).to(torch.uint8)
    return resize_bilinear(small[:, :1], (height, width)), resize_bilinear(small[:, 1:], _size(uv))


def person_weight(mask: torch.Tensor, wrap: float) -> torch.Tensor:
    """How much of the frame each pixel keeps: the mask, less the background's light spilling onto the
    person's edge as a lens would (light wrap, `wrap` > 0)."""
    if wrap <= 0.0:
        return mask
    radius = max(1, mask.shape[-2] // 60)
    soft = box_blur(mask, radius)
    spill = (wrap * 2.0 * mask * (1.0 - soft).clamp_min(0.0)).clamp_(0.0, 1.0)
    # lerp(background, lerp(frame, background, spill), mask) is lerp(background, frame, mask x (1 - spill)).
    return mask * (1.0 - spill)


def composite(
    y: torch.Tensor,
    uv: torch.Tensor,
    mask: torch.Tensor,
    background: tuple[torch.Tensor, torch.Tensor],
    wrap: float,
    edges: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The person's planes over the background's, each blended with the weight at its own size; with `edges`,
    the person's own colour where the mask is soft (foreground.py), not the frame's mix with the old background."""
    weight = person_weight(mask, wrap)
    chroma_weight = downscale(weight, _size(uv))
    if edges:
        chroma_mask = chroma_weight if weight is mask else downscale(mask, _size(uv))
        return over(background, y, uv, mask, (weight, chroma_weight), chroma_mask)
    return blend(background[0], y, weight), blend(background[1], uv, chroma_weight)


def compose(
    y: torch.Tensor,
    uv: torch.Tensor,
    mask: torch.Tensor,
    state: BackgroundState,
    config: SessionConfig,
    backgrounds: BackgroundStore,
) -> tuple[tuple[torch.Tensor, torch.Tensor], BackgroundState]:
    """The frame's planes as the session's mode shows it, and the stream's background, cached for the next."""
    if config.mode == "mask":
        grey = (mask * 219.0 + 16.0).round_().to(torch.uint8)  # white is Y 235 in limited range
        return (grey, torch.full_like(uv, _NEUTRAL)), state
    if config.mode == "blur":
        background = blurred_background(y, uv, mask, config.blur)
    elif config.mode == "color":
        background = _color(config.rgb(), y.device)
    else:  # image
        background, state = _background_image(config.image, y, uv, state, backgrounds)
    return composite(y, uv, mask, background, config.light_wrap, config.edges), state


@lru_cache(maxsize=64)
def _color(rgb: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A plain colour as (1,1,1,1) Y and (1,2,1,1) UV uint8 values, made once per colour and device (0.15 ms
    a frame otherwise) and shared: read, never written."""
    yuv = RGB_TO_YUV[:, :3] @ np.array(rgb, np.float32) + RGB_TO_YUV[:, 3]
    values = torch.from_numpy(yuv).round_().clamp_(0, 255).to(torch.uint8).to(device)
    return values[:1].view(1, 1, 1, 1), values[1:].view(1, 2, 1, 1)


def _background_image(
    name: str, y: torch.Tensor, uv: torch.Tensor, state: BackgroundState, backgrounds: BackgroundStore
) -> tuple[tuple[torch.Tensor, torch.Tensor], BackgroundState]:
    """The named image cover-fitted to the frame as planes; made once per stream, name and size, then cached."""
    key = (name, tuple(y.shape[-2:]), tuple(uv.shape[-2:]))
    if state.key == key and state.planes is not None:
        return state.planes, state
    picture = torch.from_numpy(backgrounds.get(name)).to(y.device)
    picture = picture.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    yuv = rgb_to_yuv(cover_fit(picture, y.shape[-2], y.shape[-1]))
    planes = yuv.round_().clamp_(0, 255).to(torch.uint8)
    fitted = (planes[:, :1].contiguous(), downscale(planes[:, 1:].contiguous(), _size(uv)))
    return fitted, BackgroundState(key, fitted)


def _size(plane: torch.Tensor) -> tuple[int, int]:
    return plane.shape[-2], plane.shape[-1]
