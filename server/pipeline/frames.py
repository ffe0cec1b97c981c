"""Frames in and out of the pipeline: typed frames, planes on the device and back, RGB for the models, resizing."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .backgrounds import BackgroundState
from .config import SessionConfig
from .filters import downscale, downscale_antialiased, opencv_on, resize_bilinear
from .motion import grey
from .region import Region, TrackingState
from .smoothing import SmoothingState
from .yuv import RGB_TO_YUV, YUV_TO_RGB, Planes

if TYPE_CHECKING:
    from models.zoo import Plan


@dataclass(frozen=True)
class StreamState:
    """What one stream carries from one frame to the next, a record per step that keeps something; the
    pipeline returns a new one with each frame."""

    tracking: TrackingState = field(default_factory=TrackingState)  # segmentation: the tracked region
    smoothing: SmoothingState = field(default_factory=SmoothingState)  # smoothing: the last mask and luma
    background: BackgroundState = field(default_factory=BackgroundState)  # compositing: the fitted background

    @property
    def region(self) -> Region | None:
        """Where the person is, while config.region tracks them."""
        return self.tracking.region


@dataclass(frozen=True)
class Frame:
    """One stream's frame on its way in: its planes (video) or (H,W,3) RGB uint8 pixels (files, tests; made
    planes on the pipeline's worker), the stream's state and config, and optionally `plan`, config.model
    already resolved (`ModelRegistry.plan`, e.g. when the session validated its config); without one, the
    pipeline resolves it as the frame enters."""

    pixels: Planes | np.ndarray
    state: StreamState
    config: SessionConfig
    plan: Plan | None = None


@dataclass(frozen=True)
class Processed:
    """One stream's frame on its way out (its planes; with mode "none", the frame as it came in) and the
    stream's next state."""

    output: Planes | np.ndarray
    state: StreamState

    @property
    def planes(self) -> Planes:
        return self.output if isinstance(self.output, Planes) else Planes.of_rgb(self.output)

    @property
    def pixels(self) -> np.ndarray:
        """The frame as (H,W,3) uint8 RGB."""
        return self.output if isinstance(self.output, np.ndarray) else self.output.rgb()


@dataclass(frozen=True)
class Masked:
    """One stream's full-resolution person probability (H,W) in [0,1] and the stream's next state."""

    mask: torch.Tensor
    state: StreamState


def planes_of(pixels: Planes | np.ndarray) -> Planes:
    """A frame's planes (RGB pixels converted to 4:4:4)."""
    return pixels if isinstance(pixels, Planes) else Planes.of_rgb(pixels)


class DeviceFrame:
    """A frame's planes on the pipeline's device: `y` (1,1,H,W) and `uv` (1,2,h,w) uint8, and RGB made from
    them at the sizes the models want."""

    def __init__(self, planes: Planes, device: torch.device) -> None:
        self.planes = planes
        self.y = _upload(planes.y, device)[None, None]
        self.uv = torch.stack([_upload(planes.u, device), _upload(planes.v, device)])[None]
        self._lumas: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def size(self) -> tuple[int, int]:
        return self.planes.size

    def rgb_at(self, size: tuple[int, int]) -> torch.Tensor:
        """The frame shrunk to `size` (h, w) as (1,3,h,w) uint8 RGB: the planes are scaled first, so only
        the small picture is converted."""
        yuv = torch.cat([self._luma(size), downscale(self.uv, size)], dim=1)
        return yuv_to_rgb(yuv)

    def rgb_in(self, box: tuple[int, int, int, int], size: tuple[int, int]) -> torch.Tensor:
        """Rows top:bottom and columns left:right of the frame (`box`, black beyond its edges) scaled to
        `size` (h, w) as (1,3,h,w) uint8 RGB: only the region is converted."""
        top, bottom, left, right = box
        (height, width), (chroma_h, chroma_w) = self.size, self.uv.shape[-2:]
        sy, sx = chroma_h / height, chroma_w / width
        # The chroma box covers the luma box: a 4:2:0 sample sits on two rows and two columns.
        chroma = (math.floor(top * sy), math.ceil(bottom * sy), math.floor(left * sx), math.ceil(right * sx))
        y = _crop(self.y, box, _BLACK[0])
        uv = resize_bilinear(_crop(self.uv, chroma, _BLACK[1]), (y.shape[-2], y.shape[-1]))
        # A region is usually 1-2x the model's size, where `downscale`'s fast shrink (whole factors, then
        # bilinear) aliases: on fullbody-dev that cost 0.3 points of IoU.
        return downscale_antialiased(yuv_to_rgb(torch.cat([y, uv], dim=1)), size)

    def luma_at(self, size: tuple[int, int]) -> np.ndarray:
        """The Y plane shrunk to `size` (h, w), contiguous on the CPU (for the optical flow); on the CPU, the
        one the model's input was made from."""
        if self.y.device.type != "cpu":
            return grey(self.planes.y, size)
        return np.ascontiguousarray(self._luma(size)[0, 0].numpy())

    def _luma(self, size: tuple[int, int]) -> torch.Tensor:
        if size not in self._lumas:
            self._lumas[size] = downscale(self.y, size)
        return self._lumas[size]


# RGB black in limited-range YUV: what a region reaching beyond the frame shows there.
_BLACK = (16, 128)


def _crop(planes: torch.Tensor, box: tuple[int, int, int, int], fill: int) -> torch.Tensor:
    """(1,C,H,W) planes cut to rows top:bottom and columns left:right, padded with `fill` beyond their edges."""
    top, bottom, left, right = box
    height, width = planes.shape[-2:]
    inside = planes[..., max(top, 0) : min(bottom, height), max(left, 0) : min(right, width)]
    pad = (max(0, -left), max(0, right - width), max(0, -top), max(0, bottom - height))
    return F.pad(inside, pad, value=fill) if any(pad) else inside


def _upload(plane: np.ndarray, device: torch.device) -> torch.Tensor:
    with warnings.catch_warnings():
        # Read-only arrays (a decoder's frame) are fine: the planes are only read.
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(plane)
    if device.type == "cuda":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def yuv_to_rgb(yuv: torch.Tensor) -> torch.Tensor:
    """(1,3,H,W) uint8 YUV -> (1,3,H,W) uint8 RGB, channels-last (OpenCV on the CPU, a matrix product elsewhere)."""
    if opencv_on(yuv):
        array = cv2.transform(cv2.merge([p.numpy() for p in yuv[0]]), YUV_TO_RGB)
        return torch.from_numpy(array).permute(2, 0, 1)[None]
    matrix = torch.from_numpy(YUV_TO_RGB).to(yuv.device)
    rgb = torch.einsum("rc,nchw->nrhw", matrix[:, :3], yuv.float()) + matrix[:, 3].view(1, 3, 1, 1)
    return rgb.round_().clamp_(0, 255).to(torch.uint8).contiguous(memory_format=torch.channels_last)


def rgb_to_yuv(rgb: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) float RGB in [0,1] -> (N,3,H,W) float YUV in [0,255] (BT.601, limited range)."""
    matrix = torch.from_numpy(RGB_TO_YUV).to(rgb.device, rgb.dtype)
    return torch.einsum("yc,nchw->nyhw", matrix[:, :3] * 255.0, rgb) + matrix[:, 3].view(1, 3, 1, 1)


def download(y: torch.Tensor, uv: torch.Tensor) -> Planes:
    """(1,1,H,W) and (1,2,h,w) uint8 planes on any device -> `Planes` on the CPU; 4:2:0 ones are written
    into a new yuv420p `VideoFrame`, which the encoders take as it is."""
    y_cpu, uv_cpu = y[0, 0].cpu().numpy(), uv[0].cpu().numpy()
    if uv.shape[-2:] == y.shape[-2:]:
        return Planes(y_cpu, uv_cpu[0], uv_cpu[1])
    out = Planes.allocate((y_cpu.shape[0], y_cpu.shape[1]))
    out.y[:] = y_cpu
    out.u[:] = uv_cpu[0]
    out.v[:] = uv_cpu[1]
    return out


def cover_fit(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Scale (1,3,h,w) to cover HxW keeping its aspect ratio, then crop the centre."""
    h, w = image.shape[-2:]
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    resized = F.interpolate(image, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=scale < 1)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized[..., top : top + height, left : left + width]
