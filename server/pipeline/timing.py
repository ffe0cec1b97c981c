"""Per-stage wall time of the pipeline, for benchmarks and metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

STAGES = ("upload", "model", "smoothing", "refine", "composite", "download")


@dataclass
class StageTimes:
    """Milliseconds spent per stage over one `Pipeline.process` call (device-synchronised)."""

    ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))


class StageClock:
    """Adds the time since the last lap to a stage, when asked to; synchronises CUDA so the figures are real."""

    def __init__(self, device: torch.device, times: StageTimes | None) -> None:
        self.device, self.times = device, times
        self.last = time.perf_counter() if times is not None else 0.0

    def lap(self, stage: str) -> None:
        if self.times is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.times.ms[stage] += (now - self.last) * 1000.0
        self.last = now
