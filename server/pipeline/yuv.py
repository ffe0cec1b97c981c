"""Frames as Y, U and V planes: the pixel format from decoder to encoder.

Video arrives from the decoders as 4:2:0 planes (chroma at half size both ways) and leaves for the encoders
the same way, so the pipeline works on the planes and converts nothing at full size. RGB pictures (image
files, tests) become 4:4:4 planes, chroma at full size, so a still keeps all its colour. Colours are BT.601
with limited range (Y 16-235), as WebRTC's codecs, browsers and libswscale take yuv420p.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from av import VideoFrame

# RGB (0-255) -> Y'CbCr, BT.601 limited range; the last column is the offset.
RGB_TO_YUV = np.array(
    [
        [0.256788, 0.504129, 0.097906, 16.0],
        [-0.148223, -0.290993, 0.439216, 128.0],
        [0.439216, -0.367788, -0.071427, 128.0],
    ],
    dtype=np.float32,
)
# Its inverse, with the offsets folded in: rgb = YUV_TO_RGB[:, :3] @ yuv + YUV_TO_RGB[:, 3].
YUV_TO_RGB = np.concatenate(
    [
        np.linalg.inv(RGB_TO_YUV[:, :3].astype(np.float64)),
        -np.linalg.inv(RGB_TO_YUV[:, :3].astype(np.float64)) @ RGB_TO_YUV[:, 3:].astype(np.float64),
    ],
    axis=1,
).astype(np.float32)


@dataclass(frozen=True)
class Planes:
    """One frame's planes: `y` (H,W) uint8, `u` and `v` (h,w) uint8 at their own size, half of H and W
    rounded up (4:2:0, from video) or H and W (4:4:4, from RGB). Arrays may be views with padded rows.

    `frame`: the yuv420p `VideoFrame` whose memory the arrays view, when they were written into one.
    """

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    frame: VideoFrame | None = None

    def __post_init__(self) -> None:
        planes = (self.y, self.u, self.v)
        if any(p.ndim != 2 or p.dtype != np.uint8 for p in planes) or self.u.shape != self.v.shape:
            raise ValueError(f"expected 2-D uint8 Y, U and V planes, got {[(p.shape, p.dtype) for p in planes]}")
        if self.u.shape not in (self.y.shape, chroma_size(self.size)):
            raise ValueError(f"chroma planes {self.u.shape} fit neither 4:2:0 nor 4:4:4 of {self.y.shape}")

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the frame."""
        return self.y.shape[0], self.y.shape[1]

    @property
    def subsampled(self) -> bool:
        """Chroma at half size (4:2:0)."""
        return self.u.shape != self.y.shape

    @classmethod
    def of_rgb(cls, rgb: np.ndarray) -> Planes:
        """An (H,W,3) uint8 RGB picture as 4:4:4 planes."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
            raise ValueError(f"expected an (H,W,3) uint8 RGB frame, got {rgb.shape} {rgb.dtype}")
        yuv = cv2.transform(np.ascontiguousarray(rgb), RGB_TO_YUV)
        y, u, v = cv2.split(yuv)
        return cls(y, u, v)

    @classmethod
    def of_video_frame(cls, frame: VideoFrame) -> Planes:
        """A decoded frame's planes, viewed without a copy (converted to yuv420p first if it is not)."""
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        y, u, v = (_view(plane) for plane in frame.planes)
        return cls(y, u, v, frame)

    @classmethod
    def allocate(cls, size: tuple[int, int]) -> Planes:
        """Blank 4:2:0 planes backed by a new yuv420p `VideoFrame`, for results the encoder takes as they are."""
        frame = VideoFrame(size[1], size[0], "yuv420p")
        y, u, v = (_view(plane) for plane in frame.planes)
        return cls(y, u, v, frame)

    def video_frame(self) -> VideoFrame:
        """The planes as a yuv420p `VideoFrame` (the one they view, else a copy; 4:4:4 chroma is halved)."""
        if self.frame is not None:
            return self.frame
        out = Planes.allocate(self.size)
        out.y[:] = self.y
        for source, target in ((self.u, out.u), (self.v, out.v)):
            if self.subsampled:
                target[:] = source
            else:
                cv2.resize(source, (target.shape[1], target.shape[0]), dst=target, interpolation=cv2.INTER_AREA)
        return out.video_frame()

    def rgb(self) -> np.ndarray:
        """The frame as (H,W,3) uint8 RGB (4:2:0 chroma upsampled bilinearly)."""
        height, width = self.size
        u, v = self.u, self.v
        if self.subsampled:
            u, v = (cv2.resize(p, (width, height), interpolation=cv2.INTER_LINEAR) for p in (u, v))
        return cv2.transform(cv2.merge([np.ascontiguousarray(self.y), u, v]), YUV_TO_RGB)


def chroma_size(size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of a 4:2:0 frame's chroma planes, for a frame of (H, W)."""
    return -(-size[0] // 2), -(-size[1] // 2)


def _view(plane: object) -> np.ndarray:
    """A `VideoFrame` plane as an (h,w) array over its memory (rows padded to its line size)."""
    width, height, line = plane.width, plane.height, plane.line_size  # type: ignore[attr-defined]
    return np.frombuffer(plane, np.uint8).reshape(height, line)[:, :width]  # type: ignore[call-overload]
