"""The track sent back: a frame goes to the pipeline while the sender still encodes the last, so frames that
arrive close together (network jitter, a repaired gap) are all shown, in order, and only a frame that a
newer one overtakes before the pipeline is free is dropped."""

from __future__ import annotations

import asyncio
import fractions

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from server.pipeline.config import SessionConfig
from server.pipeline.pipeline import Pipeline
from server.pipeline.workers import PipelineWorkers
from server.rtc.track import BackgroundReplacementTrack

pytestmark = pytest.mark.unit

TIME_BASE = fractions.Fraction(1, 90000)


class BurstyCamera(MediaStreamTrack):
    """Delivers `bursts` bursts of `size` frames `apart` seconds apart, one burst every `every` seconds, then ends."""

    kind = "video"

    def __init__(self, bursts: int, size: int, apart: float, every: float) -> None:
        super().__init__()
        self.schedule = [(b * every + i * apart, b * size + i) for b in range(bursts) for i in range(size)]
        self.start: float | None = None

    async def recv(self) -> VideoFrame:
        loop = asyncio.get_running_loop()
        self.start = loop.time() if self.start is None else self.start
        if not self.schedule:
            raise MediaStreamError
        at, index = self.schedule.pop(0)
        await asyncio.sleep(max(0.0, self.start + at - loop.time()))
        frame = VideoFrame.from_ndarray(np.full((48, 64, 3), index % 256, np.uint8), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts, frame.time_base = index * 3000, TIME_BASE
        return frame


@pytest.fixture
def workers():
    pool = PipelineWorkers(Pipeline(device="cpu"))
    yield pool
    pool.close()


async def _send_all(track: BackgroundReplacementTrack, encode_s: float) -> list[int]:
    """What a sender that takes `encode_s` to encode each frame sends: the frames' indices, in order."""
    sent = []
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return sent
        sent.append(frame.pts // 3000)
        await asyncio.sleep(encode_s)  # the encoder at work: the next frames arrive meanwhile


async def test_frames_that_come_while_the_last_is_encoded_are_all_sent(workers: PipelineWorkers) -> None:
    # Three frames 8 ms apart every 150 ms, a 30 ms encode: the second is processed while the first is
    # encoded, the third waits for the sender's slot; none is overtaken (the old track dropped the second).
    config = SessionConfig(mode="none")
    camera = BurstyCamera(bursts=5, size=3, apart=0.008, every=0.15)
    track = BackgroundReplacementTrack(camera, workers, lambda: (config, None))
    sent = await asyncio.wait_for(_send_all(track, encode_s=0.03), 10.0)
    assert sent == list(range(15))
    assert track.stats.snapshot()["frames_dropped"] == 0


async def test_a_frame_overtaken_before_the_pipeline_is_free_is_dropped_and_counted(workers: PipelineWorkers) -> None:
    # Five frames within 4 ms and a slow encoder: one frame in the pipeline (or the sender's slot), and of
    # those that wait for the pipeline meanwhile only the newest is kept.
    config = SessionConfig(mode="none")
    camera = BurstyCamera(bursts=1, size=5, apart=0.001, every=1.0)
    track = BackgroundReplacementTrack(camera, workers, lambda: (config, None))
    sent = await asyncio.wait_for(_send_all(track, encode_s=0.05), 10.0)
    assert sent[0] == 0 and sent[-1] == 4 and sent == sorted(sent)
    assert 2 <= len(sent) < 5
    assert track.stats.snapshot()["frames_dropped"] == 5 - len(sent)
