"""Live statistics of one session's video, and running totals over every session the server has had."""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Totals:
    """Counts over all sessions, ended ones included: what Prometheus counters report."""

    frames_in: int = 0
    frames_out: int = 0
    frames_dropped: int = 0
    errors: int = 0


@dataclass
class StreamStats:
    """One session's counters and recent processing times; `snapshot` gives the JSON the API and the page show.

    Recent percentiles are computed here because the page shows them per session; the server-wide
    distributions are Prometheus histograms (see server.web.metrics).
    """

    totals: Totals = field(default_factory=Totals)
    frames_in: int = 0
    frames_out: int = 0
    frames_dropped: int = 0
    errors: int = 0
    model_runs: int = 0  # frames the model ran on (config.keyframes lets the flow carry the mask between)
    last_media: float = field(default_factory=time.monotonic)
    _processing_ms: deque[float] = field(default_factory=lambda: deque(maxlen=300))
    _out_times: deque[float] = field(default_factory=lambda: deque(maxlen=120))

    def received(self) -> None:
        self.frames_in += 1
        self.totals.frames_in += 1
        self.last_media = time.monotonic()

    def dropped(self) -> None:
        self.frames_dropped += 1
        self.totals.frames_dropped += 1

    def failed(self) -> None:
        self.errors += 1
        self.totals.errors += 1

    def delivered(self, processing_ms: float, model_ran: bool = True) -> None:
        self.frames_out += 1
        self.model_runs += model_ran
        self.totals.frames_out += 1
        self._processing_ms.append(processing_ms)
        self._out_times.append(time.monotonic())

    def fps(self) -> float:
        now = time.monotonic()
        recent = [t for t in self._out_times if now - t <= 2.0]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def snapshot(self) -> dict[str, float | int | None]:
        ms = sorted(self._processing_ms)

        def pick(q: float) -> float | None:
            return round(ms[min(len(ms) - 1, int(q * len(ms)))], 2) if ms else None

        return {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "frames_dropped": self.frames_dropped,
            "errors": self.errors,
            "model_runs": self.model_runs,
            "fps": round(self.fps(), 1),
            "processing_ms_p50": pick(0.5),
            "processing_ms_p95": pick(0.95),
            "processing_ms_mean": round(statistics.fmean(ms), 2) if ms else None,
        }
