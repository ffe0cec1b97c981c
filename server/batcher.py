"""Frames from all sessions, batched through the shared pipeline on one worker thread."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .config import SessionConfig
from .pipeline import Pipeline, StreamState


@dataclass
class _Job:
    frame: np.ndarray
    state: StreamState
    config: SessionConfig
    future: asyncio.Future


class FrameBatcher:
    """`await process(...)` from any session; pending frames go through the model together.

    Pixel work runs on a single worker thread, off the event loop: one thread
    keeps the device's work ordered and lets torch use every core per op.
    """

    def __init__(self, pipeline: Pipeline, max_batch: int = 16) -> None:
        self.pipeline = pipeline
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait().future.cancel()
        self._executor.shutdown(wait=True)

    async def process(self, frame: np.ndarray, state: StreamState, config: SessionConfig) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(frame, state, config, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            while len(jobs) < self.max_batch and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            jobs = [j for j in jobs if not j.future.cancelled()]
            if not jobs:
                continue
            try:
                outputs = await loop.run_in_executor(
                    self._executor,
                    self.pipeline.process,
                    [j.frame for j in jobs],
                    [j.state for j in jobs],
                    [j.config for j in jobs],
                )
            except Exception as exc:  # one bad batch must not stop every session's video
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for job, output in zip(jobs, outputs):
                if not job.future.done():
                    job.future.set_result(output)
