"""The speed of the server's VP8 encoders: raised while the CPU cannot keep up with every session's frames,
lowered again once it can.

libvpx's real-time speed trades picture for CPU without dropping frames or shrinking them. On this project's
2-core machine (`backdrop bench --encoder`, 640x480 at 2 Mb/s, one thread), speed 12 encodes in 0.75-0.8x
the time of speed 6 and loses 0.5-0.7 dB of PSNR on talking heads (1.5-2.5 dB on fast full-body motion);
an overloaded server otherwise drops a fifth to a third of each session's frames. So the encoders run at the
configured speed (`--vp8-speed`) while the CPU keeps up, and faster, up to `--vp8-speed-max`, only while it
does not: frames are being dropped and the process's cores are busy. libwebrtc's overuse detector does the
same to a sender's resolution.

Each change restarts every VP8 encoder at its next frame (PyAV opens libvpx with its speed; nothing changes it
later), with a keyframe and a second of rate control starting low, as at a session's start. So changes are
few: straight to the fastest after two overloaded seconds, one step back after ten quiet ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from .stats import Totals

log = logging.getLogger(__name__)

TICK_S = 1.0  # how often the CPU and the frames are looked at
STEP = 3  # speeds per step back: 12, 9, 6
BUSY = 0.85  # the share of the process's cores above which drops are the CPU's doing
DROPPING = 0.05  # the share of received frames dropped that counts as not keeping up
QUIET = 0.65  # below this share, the CPU has room for a slower speed (a step costs under 10% more)
UP_AFTER = 2  # overloaded ticks in a row before a step up
DOWN_AFTER = 10  # quiet ticks in a row before a step down


@dataclass
class EncoderSpeed:
    """The speed VP8 encoders should use now, between `floor` (the configured speed) and `ceiling`."""

    floor: int
    ceiling: int
    cores: int  # the cores this process may use: its share of the machine
    speed: int = field(init=False)
    changes: int = 0  # how often the speed moved (each one a keyframe per encoder)
    _last: tuple[float, float, int, int] | None = None  # (time, CPU seconds, frames in, frames dropped)
    _overloaded: int = 0  # ticks in a row
    _quiet: int = 0

    def __post_init__(self) -> None:
        if self.ceiling < self.floor:
            raise ValueError(f"the fastest VP8 speed ({self.ceiling}) is below the configured one ({self.floor})")
        self.speed = self.floor

    def __call__(self) -> int:
        return self.speed

    def update(self, now: float, cpu_s: float, frames_in: int, frames_dropped: int) -> int:
        """Take a sample of the process's CPU time and its frame counters (over every session); returns the
        speed from now on."""
        last, self._last = self._last, (now, cpu_s, frames_in, frames_dropped)
        if last is None or now <= last[0]:
            return self.speed
        busy = (cpu_s - last[1]) / ((now - last[0]) * self.cores)
        received = frames_in - last[2]
        dropping = received > 0 and (frames_dropped - last[3]) / received > DROPPING
        self._overloaded = self._overloaded + 1 if busy > BUSY and dropping else 0
        self._quiet = self._quiet + 1 if busy < QUIET and not dropping else 0
        if self._overloaded >= UP_AFTER and self.speed < self.ceiling:
            self._step(self.ceiling)
        elif self._quiet >= DOWN_AFTER and self.speed > self.floor:
            self._step(max(self.floor, self.speed - STEP))
        return self.speed

    def _step(self, speed: int) -> None:
        log.info("VP8 speed %d -> %d: the cores %s", self.speed, speed, "are short" if speed > self.speed else "have room")
        self.speed = speed
        self.changes += 1
        self._overloaded = self._quiet = 0

    async def follow(self, totals: Totals) -> None:
        """Sample this process every TICK_S until cancelled."""
        while True:
            self.update(time.monotonic(), time.process_time(), totals.frames_in, totals.frames_dropped)
            await asyncio.sleep(TICK_S)
