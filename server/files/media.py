"""Image and video files: images as RGB uint8 through models.images, videos through PyAV (RGB or decoded frames)."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from models.images import is_image, read_image

__all__ = ["VideoWriter", "is_image", "read_image", "read_video", "read_video_frames", "video_info", "write_image"]


def write_image(path: Path, frame: np.ndarray) -> None:
    Image.fromarray(frame).save(path)


def video_info(path: Path) -> tuple[int, Fraction]:
    """(frame count, or 0 when the container does not say; frame rate)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.frames, stream.average_rate or Fraction(25)


def read_video(path: Path, limit: int | None = None) -> Iterator[np.ndarray]:
    """Decoded frames of the first video stream, as (H,W,3) RGB uint8."""
    for frame in read_video_frames(path, limit):
        yield frame.to_ndarray(format="rgb24")


def read_video_frames(path: Path, limit: int | None = None) -> Iterator[av.VideoFrame]:
    """Decoded frames of the first video stream, as the decoder gives them."""
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if limit is not None and index >= limit:
                return
            yield frame


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

    def write(self, frame: np.ndarray | av.VideoFrame) -> None:
        """An (H,W,3) RGB uint8 frame, or a video frame (yuv420p ones of even size go in as they are)."""
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24") if isinstance(frame, np.ndarray) else frame
        if not self._started:
            # yuv420p needs even sizes: round up, then the last row/column is duplicated by reformat.
            self._stream.height = video_frame.height + video_frame.height % 2
            self._stream.width = video_frame.width + video_frame.width % 2
            self._started = True
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
