"""Prometheus metrics: sessions open, frames counted over every session, time per frame in each stage."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from ..pipeline.timing import StageTimes
from ..rtc.stats import Totals

# Seconds per frame and stage: from a tenth of a millisecond to a quarter second.
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class _TotalsCollector(Collector):
    """Counters read from the sessions' running totals when Prometheus scrapes."""

    def __init__(self, totals: Totals) -> None:
        self.totals = totals

    def collect(self) -> Iterator[Metric]:
        for name, text in (
            ("frames_in", "frames received from peers"),
            ("frames_out", "frames sent to peers"),
            ("frames_dropped", "stale frames dropped (processing slower than the camera)"),
            ("errors", "frames sent unchanged because processing failed"),
        ):
            yield CounterMetricFamily(f"backdrop_{name}", text, value=getattr(self.totals, name))


class Metrics:
    """The application's registry; `observe_batch` is the pipeline workers' observer."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, sessions: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.totals = Totals()
        Gauge("backdrop_sessions", "open sessions", registry=self.registry).set_function(sessions)
        self.registry.register(_TotalsCollector(self.totals))
        self._stage = Histogram(
            "backdrop_stage_seconds",
            "pipeline time per frame in each stage (a batch's time over its frames)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self._batch = Histogram(
            "backdrop_batch_frames", "frames per pipeline batch", buckets=(1, 2, 4, 8, 16, 32), registry=self.registry
        )

    def observe_batch(self, times: StageTimes, frames: int) -> None:
        for stage, ms in times.ms.items():
            self._stage.labels(stage).observe(ms / 1000.0 / frames)
        self._batch.observe(frames)

    def render(self) -> bytes:
        return generate_latest(self.registry)
