"""The video track sent back to a peer: the peer's camera with its background replaced."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from models.zoo import Plan

from ..pipeline.config import SessionConfig
from ..pipeline.frames import Frame, StreamState
from ..pipeline.workers import PipelineWorkers
from ..pipeline.yuv import Planes
from .stats import StreamStats, Totals

log = logging.getLogger(__name__)


class BackgroundReplacementTrack(MediaStreamTrack):
    """Wraps an incoming video track; always processes the newest frame and drops stale ones.

    A reader task drains the source as fast as it delivers, keeping one frame:
    when processing is slower than the camera, older frames are dropped (and
    counted) instead of queueing, so latency never builds up.
    """

    kind = "video"

    def __init__(
        self,
        source: MediaStreamTrack,
        workers: PipelineWorkers,
        config: Callable[[], tuple[SessionConfig, Plan]],
        totals: Totals | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.stats = StreamStats(totals or Totals())
        self._workers = workers
        self._config = config
        self._state = StreamState()
        self._latest: VideoFrame | None = None
        self._ready = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                frame = await self.source.recv()
                self.stats.received()
                if self._latest is not None:
                    self.stats.dropped()
                self._latest = frame  # type: ignore[assignment]  # a video track yields video frames
                self._ready.set()
        except MediaStreamError:
            pass  # the peer stopped sending
        finally:
            self._ready.set()  # wakes recv(), which finds no frame and ends the track

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._ready.wait()
        frame, self._latest = self._latest, None
        self._ready.clear()
        if frame is None:  # woken because the source ended
            self.stop()
            raise MediaStreamError
        start = time.perf_counter()
        try:
            # The decoder's planes go to the pipeline as they are, and come back in a yuv420p frame that the
            # encoders take without converting (an encoder converting another format would do it on the one
            # frame every consumer shares: the sender and its WHEP players; libswscale crashed on that once).
            config, plan = self._config()  # the session's config and the model plan resolved with it
            submitted = Frame(Planes.of_video_frame(frame), self._state, config, plan)
            processed = await asyncio.wrap_future(self._workers.submit(submitted))
            self._state = processed.state
            model_ran = config.mode != "none" and processed.state.smoothing.model_ran
            out = processed.planes.video_frame()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Keep the call alive on a processing error: send the original frame and count it.
            log.exception("processing failed; sending the frame unchanged")
            self.stats.failed()
            out, model_ran = frame, False
        out.pts, out.time_base = frame.pts, frame.time_base
        self.stats.delivered((time.perf_counter() - start) * 1000.0, model_ran)
        return out

    def stop(self) -> None:
        super().stop()
        self._reader.cancel()
        self.source.stop()
