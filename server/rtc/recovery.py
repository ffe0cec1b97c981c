"""Loss recovery on a video receiver: retried NACKs (nacks.py), a frame given up when the gap before it
outlives its deadline, and a keyframe asked for then, again if it does not come.

aiortc NACKs a missing packet once, when a later packet shows the gap, and its jitter buffer waits for
the packet until 512 newer ones have come (1-2 s of video at 640x480): one lost NACK or retransmission
froze the picture that long. Here a gap that blocks the oldest frame for longer than its deadline (3
round trips, 120-400 ms; the round trip from the connection's sender's RTCP, else from NACK repairs) is
skipped, and with it every later gap as old (a gap's age is that of the first packet received after it):
the buffer moves on to the next frame that starts after the last of them, tells the NACK generator to stop
asking for what it skipped, and asks the sender for a keyframe (PLI), repeated each round trip until one
arrives, so the decoder is clean again. The frames after are decoded, not held: a moment of smearing,
not a freeze. Skipping old gaps one deadline at a time would cost a deadline each: after a narrow link's
first second left dozens, the picture stood still for 5-10 s.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import MAX_MISORDER, JitterFrame
from aiortc.mediastreams import VIDEO_CLOCK_RATE
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add, uint16_gt

from . import aiortc_hooks
from .jitter import CAPACITY, MarkerJitterBuffer
from .nacks import Clock, RetryingNackGenerator, RoundTrip

log = logging.getLogger(__name__)


def _vp8_starts_frame(packet: RtpPacket) -> bool:
    """VP8's payload descriptor (RFC 7741): S set and partition 0 is a frame's first packet."""
    return bool(packet.payload) and bool(packet.payload[0] & 0x10) and packet.payload[0] & 0x07 == 0


def _vp8_starts_keyframe(packet: RtpPacket) -> bool:
    """A key frame's first packet: its frame tag (the first payload byte after the descriptor) has P clear."""
    data = getattr(packet, "_data", b"")
    return _vp8_starts_frame(packet) and bool(data) and data[0] & 0x01 == 0


def is_keyframe(frame: JitterFrame) -> bool:
    """A VP8 key frame (its frame tag's P bit clear) or an H.264 frame with an IDR slice."""
    data = frame.data
    if data[:4] == b"\x00\x00\x00\x01" or data[:3] == b"\x00\x00\x01":  # H.264, Annex B
        return any(data[i + 3] & 0x1F == 5 for i in range(len(data) - 3) if data[i : i + 3] == b"\x00\x00\x01")
    return bool(data) and data[0] & 0x01 == 0


class RecoveringJitterBuffer(MarkerJitterBuffer):
    """The marker-bit buffer that gives up a gap blocking the oldest frame once its deadline passes, and
    asks for a keyframe (returns `pli` True) then and each round trip after until one comes."""

    def __init__(
        self,
        rtt: RoundTrip,
        nacks: RetryingNackGenerator | None = None,
        clock: Clock = time.monotonic,
        vp8_types: frozenset[int] = frozenset(),
        capacity: int = CAPACITY,
    ) -> None:
        super().__init__(capacity)
        self.rtt, self.nacks, self.clock, self.vp8_types = rtt, nacks, clock, vp8_types
        self.newest: int | None = None  # the newest sequence number seen
        self.arrived = [0.0] * capacity  # when each slot's packet came (clock seconds), as aiortc's slots
        self.awaiting_key = False
        self.last_pli = float("-inf")
        self.skips = 0  # gaps given up
        self.keyframe_requests = 0
        self.returned_timestamp = 0  # the RTP timestamp of the frame `add` returned last, as it came
        self.timer: asyncio.Task[None] | None = None  # recover_losses' NACKs between packets, while pc lives

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq, now = packet.sequence_number, self.clock()
        self.arrived[seq % self.capacity] = now
        if self.newest is None or uint16_gt(seq, self.newest) or uint16_add(self.newest, -seq) >= MAX_MISORDER:
            self.newest = seq  # newer, or a sender that started over (aiortc's buffer resets then too)
        if not packet.payload and (self._origin is None or seq == self._origin):
            # A filler (a FEC packet's number, fec.py): it only closes a gap in the numbers, so at the head
            # it is passed over, not held (aiortc's timestamp rule would hand it on as an empty frame).
            if self._origin is None:
                return False, None
            self.remove(1)
            pli, frame = False, self._complete()
        else:
            pli, frame = super().add(packet)
        try:
            if self.awaiting_key and packet.payload_type in self.vp8_types and _vp8_starts_keyframe(packet):
                self.last_pli = now + 1.0  # a keyframe is on its way: no more asking while it comes
            pli, frame = self._recover(pli, frame, now)
            if frame is not None:
                self.returned_timestamp = frame.timestamp
            return pli, frame
        except Exception:  # this runs in aiortc's receive loop: a bug here must not end the connection
            log.exception("loss recovery failed; the buffer goes on as aiortc's")
            return pli, frame

    def _recover(self, pli: bool, frame: JitterFrame | None, now: float) -> tuple[bool, JitterFrame | None]:
        if frame is None and (gap := self._last_stale_gap(now - self.rtt.deadline())) is not None:
            frame = self._skip(gap)
            self.awaiting_key, self.last_pli = True, float("-inf")
        if pli:  # aiortc's own reasons (a jump, an overflow) also spoil the decoder's references
            self.awaiting_key, self.last_pli = True, now
        if frame is not None and self.awaiting_key and is_keyframe(frame):
            self.awaiting_key = False
        if self.awaiting_key and now - self.last_pli >= max(self.rtt.retry_after(), 0.05):
            pli, self.last_pli = True, now
        self.keyframe_requests += pli
        return pli, frame

    def remove(self, count: int) -> None:
        super().remove(count)
        # Fillers never head the buffer (see `add`): those the removal uncovered are passed over too.
        while (head := next(aiortc_hooks.buffered(self), None)) is not None and not head.payload:
            super().remove(1)

    def drain(self, most: int = 64) -> list[JitterFrame]:
        """The frames that are complete behind the one `add` returned (after a stall, a backlog that aiortc
        would take one packet per frame to hand over, seconds at a low bitrate), oldest first."""
        frames: list[JitterFrame] = []
        while len(frames) < most and (frame := self._complete()) is not None:
            frames.append(frame)
            if self.awaiting_key and is_keyframe(frame):
                self.awaiting_key = False
        return frames

    def _last_stale_gap(self, received_before: float) -> int | None:
        """The slot of the last gap whose next packet came before `received_before` (a request and its
        retries have had their time), looking on from the oldest slot while the gaps are that old; None when
        no gap holds the oldest frame back (looks only from the oldest packet to the newest, a frame's worth
        when nothing is lost)."""
        if self._origin is None or self.newest is None:
            return None
        origin, capacity = self._origin, self.capacity
        span = uint16_add(self.newest, -origin) + 1  # the slots up to the newest packet
        if span > capacity:
            return None
        gap = last = None
        for index, packet in enumerate(itertools.islice(aiortc_hooks.buffered(self), span)):
            if packet is None:
                gap = index if gap is None else gap
                continue
            if gap is not None:
                if self.arrived[(origin + index) % capacity] > received_before:
                    break  # a gap newer than its deadline (packets come in order, so are those after it)
                last, gap = index - 1, None
        return last

    def _skip(self, gap: int) -> JitterFrame | None:
        """Drop everything before the first frame that starts after the gap at slot `gap`; returns that
        frame if it is already complete."""
        self.skips += 1
        slots = list(aiortc_hooks.buffered(self))
        after = [(i, p) for i, p in enumerate(slots) if i > gap and p is not None]
        if not after:
            return None  # nothing waits behind the gap after all
        held = {p.timestamp for p in slots[:gap] if p is not None}
        start = None
        for i, packet in after:
            if packet.timestamp in held:  # the frame the gap cut
                continue
            before = slots[i - 1]
            if (before is not None and before.timestamp != packet.timestamp) or (
                packet.payload_type in self.vp8_types and _vp8_starts_frame(packet)
            ):
                start = i
                break
        if start is None:  # no frame start seen yet: keep only the packets of the newest timestamp
            stamp = after[-1][1].timestamp
            start = next(i for i, p in after if p.timestamp == stamp)
        self.remove(start)
        if self.nacks is not None and self._origin is not None:
            self.nacks.forget_before(self._origin)
        return self._complete()


def recover_losses(
    pc: RTCPeerConnection, clock: Clock = time.monotonic, pace_backlogs: bool = False
) -> list[RecoveringJitterBuffer]:
    """Fit `pc`'s video receivers with retried NACKs and a buffer that skips what cannot be repaired in
    time (call after setRemoteDescription, before media flows); returns the buffers (their counters).

    With `pace_backlogs` (a consumer that keeps only the newest frame, as the server's pipeline does), the
    newest frames of a backlog go to the decoder at CATCH_UP times their own pace rather than at once."""
    buffers = []
    for transceiver in pc.getTransceivers():
        if transceiver.kind != "video":
            continue
        vp8 = frozenset(
            c.payloadType
            for c in aiortc_hooks.codecs(transceiver)
            if c.mimeType.lower() == "video/vp8" and c.payloadType
        )
        sender = transceiver.sender
        rtt = RoundTrip(reference=lambda sender=sender: aiortc_hooks.round_trip(sender))  # type: ignore[misc]
        nacks = RetryingNackGenerator(rtt, clock)
        buffer = RecoveringJitterBuffer(rtt, nacks, clock, vp8)
        aiortc_hooks.set_nack_generator(transceiver.receiver, nacks)
        aiortc_hooks.set_jitter_buffer(transceiver.receiver, buffer)
        _decode_backlogs(aiortc_hooks.decoder_queue(transceiver.receiver), buffer, pace_backlogs, clock)
        buffer.timer = asyncio.ensure_future(_nack_on_time(pc, nacks, aiortc_hooks.nack_sender(transceiver.receiver)))
        buffers.append(buffer)
    return buffers


NACK_TICK = 0.005  # s between looks at what is due while packets are asked for (libwebrtc looks every 20 ms)
IDLE_TICK = 0.02  # s between looks while nothing is


async def _nack_on_time(
    pc: RTCPeerConnection, nacks: RetryingNackGenerator, send: Callable[[int, list[int]], Awaitable[None]]
) -> None:
    """Send the NACKs `nacks` has due between packets, for as long as `pc` lives."""
    while pc.connectionState not in ("closed", "failed"):
        try:
            if (due := nacks.poll()) and nacks.ssrc is not None:
                await send(nacks.ssrc, due)
        except Exception:  # a NACK that could not go is a repair that waits for the next packet, not an end
            log.exception("a NACK between packets failed")
        idle = min(IDLE_TICK, max(nacks.until_silence(nacks.clock()), NACK_TICK))
        await asyncio.sleep(NACK_TICK if nacks.asked else idle)


# A backlog's newest PACED frames (the rest go at once) are decoded at CATCH_UP times the pace they were
# captured at: a consumer that keeps only the newest frame (the server's pipeline) would drop all but the
# last of frames that come together (at 5% loss with 40 ms each way, one frame in five, measured).
PACED = 4
CATCH_UP = 2.0


def _decode_backlogs(
    frames: queue.Queue,
    buffer: RecoveringJitterBuffer,
    pace: bool = False,
    clock: Clock = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """After each frame the receiver queues for decoding, queue the rest that are complete in `buffer` too,
    their timestamps shifted as the receiver shifted the first's; with `pace`, the decoder thread waits
    before each of the newest PACED until its turn."""
    put, get = frames.put, frames.get
    release: dict[int, float] = {}  # id(frame) -> when the decoder may take it (clock seconds)

    def put_with_backlog(item: tuple[Any, JitterFrame] | None, *args: Any, **kwargs: Any) -> None:
        put(item, *args, **kwargs)
        if item is None:
            return
        codec, first = item
        shift = first.timestamp - buffer.returned_timestamp
        backlog = buffer.drain()
        at, previous = clock(), first.timestamp
        for index, frame in enumerate(backlog):
            frame.timestamp += shift
            if pace and index >= len(backlog) - PACED:
                interval = ((frame.timestamp - previous) & 0xFFFFFFFF) / VIDEO_CLOCK_RATE
                at += min(interval, 0.1) / CATCH_UP
                release[id(frame)] = at
            previous = frame.timestamp
            put((codec, frame), *args, **kwargs)

    def paced_get(*args: Any, **kwargs: Any) -> tuple[Any, JitterFrame] | None:
        item = get(*args, **kwargs)
        if item is not None and (at := release.pop(id(item[1]), None)) is not None and at > clock():
            sleep(at - clock())
        return item

    frames.put = put_with_backlog  # type: ignore[method-assign]
    frames.get = paced_get  # type: ignore[method-assign]
