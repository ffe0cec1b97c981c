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

    A reader task drains the source as fast as it delivers. A frame goes to the pipeline as soon as it
    arrives, while the sender is still encoding the last one; one processed frame waits for the sender
    and one received frame waits for the pipeline, and a newer frame replaces a waiting one (the older is
    dropped and counted), so latency never builds up. Processing the next frame only once the sender asked
    for it, as before, left the pipeline idle while the encoder ran: two frames arriving within a
    frame's processing and encoding (network jitter, a repaired gap) lost the first.
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
        self._received: VideoFrame | None = None  # the newest frame, waiting for the pipeline
        self._processing: asyncio.Task | None = None  # this stream's frame in the pipeline: one at a time
        self._processed: VideoFrame | None = None  # the newest result, waiting for the sender
        self._ended = False  # the source stopped sending
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                frame = await self.source.recv()
                self.stats.received()
                if self._received is not None:
                    self.stats.dropped()
                self._received = frame  # type: ignore[assignment]  # a video track yields video frames
                self._next()
        except MediaStreamError:
            pass  # the peer stopped sending
        finally:
            self._ended = True
            self._changed.set()  # wakes recv(), which finds nothing more coming and ends the track

    def _next(self) -> None:
        """Start on the waiting frame if the pipeline is free of this stream and the sender's slot is empty
        (a result nobody takes is work wasted)."""
        if self._received is None or self._processing is not None or self._processed is not None:
            return
        frame, self._received = self._received, None
        self._processing = asyncio.get_running_loop().create_task(self._process(frame))

    async def _process(self, frame: VideoFrame) -> None:
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
        self._processed, self._processing = out, None
        self._changed.set()

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        while self._processed is None:
            if self._ended and self._processing is None:
                self.stop()  # the source ended and nothing is left to send
                raise MediaStreamError
            self._changed.clear()
            await self._changed.wait()
            if self.readyState != "live":
                raise MediaStreamError
        out, self._processed = self._processed, None
        self._next()  # the frame that came while this one waited for the sender
        return out

    def stop(self) -> None:
        super().stop()
        self._reader.cancel()
        if self._processing is not None:
            self._processing.cancel()
        self._changed.set()
        self.source.stop()
