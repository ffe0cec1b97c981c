"""Pipeline worker threads: frames of all streams queue up, each free worker takes what waits as one batch.

Threads and concurrent futures only (no asyncio): the WebRTC layer wraps the futures for its loop.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

import torch

from .frames import Frame, Processed
from .pipeline import Pipeline
from .timing import StageTimes

BatchObserver = Callable[[StageTimes, int], None]  # (stage times of one batch, frames in it)


def cpu_cores() -> int:
    """Cores this process may run on (its affinity, e.g. a container's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def worker_layout(device: torch.device, workers: int = 0, cores: int = 0) -> tuple[int, int]:
    """(worker threads, torch threads per worker) for a pipeline on `device`; `workers` 0 picks. `cores`:
    how many cores this process's pipeline may use (0: all it may run on; less when processes share them).

    On CUDA one worker keeps the device's work ordered and batches sessions' frames together.
    On a CPU, batching gains nothing and one frame at a time leaves cores idle in the many small
    ops between the big ones; a single-threaded worker per core gets more frames through
    (measured on 2 cores: 105 frames/s, against 88 for one worker on both cores at best) and never
    oversubscribes the cores, which made OpenMP's threads sleep and the pipeline 2.3x slower.
    """
    if device.type != "cpu":
        return max(1, workers or 1), torch.get_num_threads()
    cores = min(cores, cpu_cores()) if cores else cpu_cores()
    workers = workers or cores
    return workers, max(1, cores // workers)


_Job = tuple[Frame, "Future[Processed]"]


class PipelineWorkers:
    """`submit(frame)` from any thread; `workers` threads run the frames waiting, up to `max_batch` at once.

    A stream that waits for each result before it submits the next has its frames processed in order.
    """

    def __init__(
        self, pipeline: Pipeline, workers: int = 1, max_batch: int = 16, observe: BatchObserver | None = None
    ) -> None:
        self.pipeline = pipeline
        self.workers = workers
        self.max_batch = max_batch
        self._observe = observe
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._run, name=f"pipeline-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, frame: Frame) -> Future[Processed]:
        future: Future[Processed] = Future()
        self._queue.put((frame, future))
        return future

    def close(self) -> None:
        """Stop the threads once they finish their batch; frames still waiting are cancelled."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job[1].cancel()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            stop = False
            while len(jobs) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
            # A future its waiter cancelled (the session ended) needs no work.
            jobs = [j for j in jobs if j[1].set_running_or_notify_cancel()]
            if jobs:
                self._process(jobs)
            if stop:
                return

    def _process(self, jobs: list[_Job]) -> None:
        times = StageTimes() if self._observe is not None else None
        try:
            results = self.pipeline.process([frame for frame, _ in jobs], times)
        except Exception as exc:  # one bad batch must not stop every session's video
            for _, future in jobs:
                future.set_exception(exc)
            return
        # Observed before the results go out: a frame a client holds has had its stages counted.
        if self._observe is not None and times is not None:
            self._observe(times, len(jobs))
        for (_, future), result in zip(jobs, results, strict=True):
            future.set_result(result)
