"""Image and video files as RGB uint8 frames: images through models.images, videos through PyAV."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from models.images import is_image, read_image

__all__ = ["VideoWriter", "is_image", "read_image", "read_video", "video_info", "write_image"]


def write_image(path: Path, frame: np.ndarray) -> None:
    Image.fromarray(frame).save(path)


def video_info(path: Path) -> tuple[int, Fraction]:
    """(frame count, or 0 when the container does not say; frame rate)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.frames, stream.average_rate or Fraction(25)


def read_video(path: Path, limit: int | None = None) -> Iterator[np.ndarray]:
    """Decoded frames of the first video stream, as (H,W,3) RGB uint8."""
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if limit is not None and index >= limit:
                return
            yield frame.to_ndarray(format="rgb24")


class VideoWriter:
    """H.264 (yuv420p) writer; odd frame sizes are padded by the encoder's needs, not cropped by us."""

    def __init__(self, path: Path, rate: Fraction, codec: str = "libx264") -> None:
        self._container = av.open(str(path), mode="w")
        stream = self._container.add_stream(codec, rate=rate)
        if not isinstance(stream, av.VideoStream):
            raise ValueError(f"{codec} is not a video codec")
        self._stream = stream
        self._stream.pix_fmt = "yuv420p"
        self._started = False

    def write(self, frame: np.ndarray) -> None:
        if not self._started:
            # yuv420p needs even sizes: round up, then the last row/column is duplicated by reformat.
            self._stream.height, self._stream.width = (
                frame.shape[0] + frame.shape[0] % 2,
                frame.shape[1] + frame.shape[1] % 2,
            )
            self._started = True
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        video_frame = video_frame.reformat(width=self._stream.width, height=self._stream.height, format="yuv420p")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
