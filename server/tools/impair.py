"""An impaired network in user space: loss (in bursts), delay with jitter, and a narrow link with a bounded
queue, applied to one peer's media packets (SRTP and SRTCP) in each direction; STUN and DTLS pass untouched
unless asked. Deterministic for a seed. No root, no tc: what a client and its operator can run anywhere.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

_UNITS = {"": 1.0, "%": 0.01, "ms": 1.0, "s": 1000.0, "kbps": 1.0, "mbps": 1000.0, "kbit": 1.0, "mbit": 1000.0}
_TERM = re.compile(r"^\s*(\w+)\s*=\s*([0-9.]+)\s*([a-z%]*)\s*$")


@dataclass(frozen=True)
class Impairment:
    """What one direction of the link does to packets.

    loss: the long-run share of packets lost, 0..1. burst: the mean length of a run of losses in packets
    (a Gilbert-Elliott channel; 1 is independent loss). delay_ms and jitter_ms: one-way delay, plus a
    uniform draw in [-jitter, +jitter] per packet (so packets reorder as on a real path). rate_kbps: the
    link's rate (None: unlimited); queue_ms: how much it may hold before it drops (a bounded drop-tail queue).
    media_only: only RTP/RTCP packets are impaired (STUN and DTLS pass), as media is what a test measures.
    """

    loss: float = 0.0
    burst: float = 1.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_kbps: float | None = None
    queue_ms: float = 300.0
    media_only: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), not {self.loss}")
        if self.burst < 1.0:
            raise ValueError(f"burst is a mean run of lost packets, at least 1, not {self.burst}")
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.queue_ms <= 0:
            raise ValueError("delay and jitter must not be negative, and the queue must hold something")
        if self.jitter_ms > self.delay_ms:
            raise ValueError(f"jitter ({self.jitter_ms:g} ms) must not exceed the delay ({self.delay_ms:g} ms)")
        if self.rate_kbps is not None and self.rate_kbps <= 0:
            raise ValueError(f"rate must be positive, not {self.rate_kbps}")

    @property
    def active(self) -> bool:
        return bool(self.loss or self.delay_ms or self.rate_kbps is not None)

    @classmethod
    def parse(cls, spec: str) -> Impairment:
        """From `loss=5%,burst=3,delay=40ms,jitter=10ms,rate=600kbps,queue=200ms` (any subset; '' is none)."""
        names = {"loss": "loss", "burst": "burst", "delay": "delay_ms", "jitter": "jitter_ms"}
        names |= {"rate": "rate_kbps", "queue": "queue_ms"}
        values: dict[str, Any] = {}
        for term in filter(None, (t.strip() for t in spec.split(","))):
            match = _TERM.match(term.lower())
            if match is None or match.group(1) not in names or match.group(3) not in _UNITS:
                raise ValueError(f"impairment term {term!r}: expected one of {', '.join(names)} as name=value[unit]")
            name, number, unit = match.groups()
            if name == "loss" and unit == "" and float(number) > 1:
                raise ValueError(f"loss {number}: write a share (0.05) or a percentage (5%)")
            values[names[name]] = float(number) * _UNITS[unit]
        return cls(**values)


class GilbertElliott:
    """Two-state loss: every packet in the bad state is lost, none in the good one. The chance to leave
    the bad state is 1/burst (so bad runs last `burst` packets on average), and the chance to enter it is
    set so that the long-run loss is `loss`."""

    def __init__(self, loss: float, burst: float, rng: random.Random) -> None:
        self.rng = rng
        self.leave = 1.0 / burst
        self.enter = loss * self.leave / (1.0 - loss) if loss else 0.0
        self.bad = False

    def lost(self) -> bool:
        self.bad = self.rng.random() >= self.leave if self.bad else self.rng.random() < self.enter
        return self.bad


@dataclass
class LinkCounters:
    """What one direction did: packets offered, lost to the loss model, dropped by the full queue, passed."""

    packets: int = 0
    lost: int = 0
    queue_drops: int = 0
    passed: int = 0
    bytes_passed: int = 0


@dataclass
class Tally:
    """Media packets seen in one direction, by what their clear headers say: RTP by payload type, and the
    feedback a receiver sends (NACK, PLI, FIR; aiortc sends each in a packet of its own, so the first
    header is the one that counts)."""

    rtp: dict[int, int] = field(default_factory=dict)  # payload type -> packets
    nack: int = 0
    pli: int = 0
    fir: int = 0

    def count(self, packet: bytes) -> None:
        if not is_media(packet) or len(packet) < 2:
            return
        kind = packet[1]
        if 192 <= kind <= 223:  # RTCP (RFC 5761): the packet type
            fmt = packet[0] & 0x1F
            self.nack += kind == 205 and fmt == 1
            self.pli += kind == 206 and fmt == 1
            self.fir += kind == 206 and fmt == 4
        else:
            payload = kind & 0x7F
            self.rtp[payload] = self.rtp.get(payload, 0) + 1


def is_media(packet: bytes) -> bool:
    """RTP and RTCP (SRTP, SRTCP) start with version 2: a first byte of 128..191 (RFC 7983)."""
    return len(packet) > 0 and 127 < packet[0] < 192


@dataclass
class Link:
    """One direction: each packet offered is lost, dropped by the queue, or delivered later by `deliver`."""

    impairment: Impairment
    deliver: Callable[[bytes], Awaitable[None] | None]
    seed: int = 0
    counters: LinkCounters = field(default_factory=LinkCounters)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self._rng = rng
        self._loss = GilbertElliott(self.impairment.loss, self.impairment.burst, rng)
        self._free_at = 0.0  # when the link finishes sending what it has queued (loop time, seconds)

    def offer(self, packet: bytes, now: float) -> float | None:
        """When (loop time) `packet` comes out, or None if it is lost; counts it either way."""
        impairment = self.impairment
        self.counters.packets += 1
        if impairment.media_only and not is_media(packet):
            self.counters.passed += 1
            self.counters.bytes_passed += len(packet)
            return now
        if self._loss.lost():
            self.counters.lost += 1
            return None
        leaves = now
        if impairment.rate_kbps is not None:
            start = max(now, self._free_at)
            if start - now > impairment.queue_ms / 1000:  # the queue holds more than it may: drop the newcomer
                self.counters.queue_drops += 1
                return None
            self._free_at = start + len(packet) * 8 / (impairment.rate_kbps * 1000)
            leaves = self._free_at
        jitter = self._rng.uniform(-impairment.jitter_ms, impairment.jitter_ms) if impairment.jitter_ms else 0.0
        self.counters.passed += 1
        self.counters.bytes_passed += len(packet)
        return leaves + (impairment.delay_ms + jitter) / 1000

    def send(self, packet: bytes) -> None:
        """Offer `packet` now and hand it to `deliver` when it comes out (if it does)."""
        loop = asyncio.get_running_loop()
        at = self.offer(packet, loop.time())
        if at is None:
            return
        if at <= loop.time():
            self._deliver(packet)
        else:
            loop.call_at(at, self._deliver, packet)

    def _deliver(self, packet: bytes) -> None:
        result = self.deliver(packet)
        if asyncio.iscoroutine(result):
            task = asyncio.ensure_future(result)
            task.add_done_callback(_quiet)


def _quiet(task: asyncio.Future) -> None:
    """A send on a connection that closed meanwhile is not an error of the link's."""
    if not task.cancelled():
        task.exception()


class ImpairedTransport:
    """Puts a Link in each direction of an aiortc ICE transport (`RTCIceTransport`): outgoing packets go
    through `up` before the socket, incoming ones through `down` before DTLS/SRTP sees them."""

    def __init__(self, ice: Any, up: Impairment, down: Impairment, seed: int = 0) -> None:
        self._send, self._recv = ice._send, ice._recv  # aiortc exposes the connection's send/recv there
        self._inbox: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        self.up = Link(up, self._send, seed)
        self.down = Link(down, self._inbox.put_nowait, seed + 1)
        self._pump: asyncio.Task | None = None
        self.sent, self.received = Tally(), Tally()  # what the peer sent, and what reached it
        ice._send, ice._recv = self.send, self.recv

    async def send(self, data: bytes) -> None:
        self.sent.count(data)
        self.up.send(data)

    async def recv(self) -> bytes:
        if self._pump is None:
            self._pump = asyncio.ensure_future(self._read())
        item = await self._inbox.get()
        if isinstance(item, BaseException):
            self._inbox.put_nowait(item)  # every later read fails the same way
            raise item
        self.received.count(item)
        return item

    async def _read(self) -> None:
        while True:
            try:
                packet = await self._recv()
            except (ConnectionError, asyncio.CancelledError) as exc:
                self._inbox.put_nowait(ConnectionError(str(exc)) if isinstance(exc, asyncio.CancelledError) else exc)
                return
            self.down.send(packet)

    def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()


def impair(pc: Any, up: Impairment, down: Impairment, seed: int = 0) -> list[ImpairedTransport]:
    """Impair every ICE transport of peer connection `pc` (call after setLocalDescription, before media flows).

    `up`: what the client sends; `down`: what it receives."""
    transports: list[ImpairedTransport] = []
    seen: set[int] = set()
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport
        if dtls is None or id(dtls.transport) in seen:
            continue
        seen.add(id(dtls.transport))
        transports.append(ImpairedTransport(dtls.transport, up, down, seed + 2 * len(transports)))
    sctp = getattr(pc, "sctp", None)
    if sctp is not None and id(sctp.transport.transport) not in seen:
        transports.append(ImpairedTransport(sctp.transport.transport, up, down, seed + 2 * len(transports)))
    return transports
