"""Replacing the background of an image or video file, through the same pipeline as a live session."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from ..pipeline.config import SessionConfig, validate_config
from ..pipeline.frames import StreamState
from ..pipeline.pipeline import Pipeline
from ..pipeline.yuv import Planes
from .media import VideoWriter, is_image, read_image, read_video_frames, video_info, write_image


def file_config(pipeline: Pipeline, changes: dict[str, object]) -> SessionConfig:
    """The config a file is processed with: `changes` over the defaults, checked as a session's config is
    (`validate_config`: its fields, then the model and the background it names; ConfigError if refused). An
    `image` that names a file is added to the backgrounds first, as an upload would be."""
    image = changes.get("image")
    if isinstance(image, str) and Path(image).is_file():
        changes = {**changes, "image": pipeline.backgrounds.add(Path(image).read_bytes())}
    return validate_config(SessionConfig(), changes, pipeline.backgrounds, pipeline.registry)


def process_file(pipeline: Pipeline, source: Path, target: Path, config: SessionConfig, progress: bool = True) -> int:
    """Write `source` with its background replaced to `target`; returns the number of frames."""
    state = StreamState()
    if is_image(source):
        if not is_image(target):
            raise ValueError(f"{target}: an image goes to an image file (.png, .jpg, ...)")
        write_image(target, pipeline.process_one(read_image(source), state, config).pixels)
        return 1
    count, rate = video_info(source)
    frames = 0
    with VideoWriter(target, rate) as writer:
        for frame in tqdm(
            read_video_frames(source), total=count or None, desc=source.name, unit="frame", disable=not progress
        ):
            # The decoder's planes through the pipeline and into the encoder, as a live session's frames go.
            processed = pipeline.process_one(Planes.of_video_frame(frame), state, config)
            writer.write(processed.planes.video_frame())
            state = processed.state
            frames += 1
    return frames
