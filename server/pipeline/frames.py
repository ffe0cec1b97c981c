"""Frames in and out of the pipeline: typed frames, device upload/download, resizing and layouts."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .config import SessionConfig

if TYPE_CHECKING:
    from .region import Region


@dataclass(frozen=True)
class StreamState:
    """What one stream carries from one frame to the next; the pipeline returns a new one with each frame."""

    previous_mask: torch.Tensor | None = None  # the smoothed low-resolution mask
    mask_key: tuple | None = None  # (frame size, model): smoothing restarts when it changes
    background_key: tuple | None = None  # (image name, frame size) of `background`
    background: torch.Tensor | None = None  # the cover-fitted background image, cached on the device
    region: Region | None = None  # where the person is, while config.region tracks them
    since_detect: int = 0  # frames since the last whole-frame pass
    close_up: bool = False  # that pass found someone filling the frame: whole frames until the next one
    previous_grey: np.ndarray | None = None  # the last frame's luma at mask size, for the flow to the next


@dataclass(frozen=True)
class Frame:
    """One stream's frame on its way in: (H,W,3) RGB uint8 pixels, the stream's state and config."""

    pixels: np.ndarray
    state: StreamState
    config: SessionConfig


@dataclass(frozen=True)
class Processed:
    """One stream's frame on its way out: (H,W,3) RGB uint8 pixels and the stream's next state."""

    pixels: np.ndarray
    state: StreamState


@dataclass(frozen=True)
class Masked:
    """One stream's full-resolution person probability (H,W) in [0,1] and the stream's next state."""

    mask: torch.Tensor
    state: StreamState


def upload(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H,W,3) uint8 -> (1,3,H,W) uint8 on `device`, channels-last (the HWC memory, no copy on CPU)."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected an (H,W,3) uint8 RGB frame, got {pixels.shape} {pixels.dtype}")
    with warnings.catch_warnings():
        # Read-only arrays (PIL, PyAV) are fine: the tensor is only read, then copied by .float().
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(pixels)
    if device.type == "cuda":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    return tensor.permute(2, 0, 1).unsqueeze(0)


def download(image: torch.Tensor) -> np.ndarray:
    """(1,3,H,W) float in [0,1] on any device -> (H,W,3) uint8 on the CPU."""
    planes = image[0].mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8).cpu()
    return interleave(planes)


def interleave(planes: torch.Tensor) -> np.ndarray:
    """(C,H,W) -> (H,W,C) array; stacking the planes is 3x faster on CPU than permute(1, 2, 0).contiguous()."""
    return torch.stack(planes.unbind(0), dim=-1).numpy()


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
