"""The speed of the server's VP8 encoders: raised while the CPU cannot keep up with every session's frames,
lowered again once it can.

libvpx's real-time speed trades picture for CPU without dropping frames or shrinking them. With the server's
encoder at 640x480 and 2 Mb/s (`backdrop bench --vp8-speeds 6 8 10 12 --video ...`, one thread), speed 10
took 0.76-0.83x the encoder time of speed 6 on three talking-head clips and two full-body ones, and cost
0.0-0.3 dB of PSNR on the talking heads and 1.3-1.4 dB on fast full-body motion (speed 12: 0.69-0.84x, and
0.2-0.7 and 1.9-2.3 dB). An overloaded server otherwise drops a fifth to a third of each session's frames.
So the encoders can run at the configured speed (`--vp8-speed`) while the CPU keeps up, and at
`--vp8-speed-max` only while it does not: frames are being dropped and the process's cores are busy.
libwebrtc's overuse detector does the same to a sender's resolution.

It is off unless `--vp8-speed-max` is set: with three sessions of a real talking-head clip on one core
(`backdrop loadtest --video`), it gave 0.96x the server CPU a frame and 0.7 fps more each (medians of six
runs each, within this host's noise), while the clients received 10-20% fewer kb/s after the restarts.

Each change restarts every VP8 encoder at its next frame (PyAV opens libvpx with its speed; nothing changes it
later), with a keyframe and a second of rate control starting low, as at a session's start. So changes are
few: straight to the fastest after two overloaded seconds, a step back after ten quiet ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from .stats import Totals

log = logging.getLogger(__name__)

TICK_S = 1.0  # how often the CPU and the frames are looked at
STEP = 2  # speeds per step back: 10, 8, 6
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
        log.info(
            "VP8 speed %d -> %d: the cores %s", self.speed, speed, "are short" if speed > self.speed else "have room"
        )
        self.speed = speed
        self.changes += 1
        self._overloaded = self._quiet = 0

    async def follow(self, totals: Totals) -> None:
        """Sample this process every TICK_S until cancelled."""
        while True:
            self.update(time.monotonic(), time.process_time(), totals.frames_in, totals.frames_dropped)
            await asyncio.sleep(TICK_S)
