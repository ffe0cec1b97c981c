"""Loss recovery on a video receiver: NACKs retried until a packet is too old to matter, a frame given up
when the gap before it outlives its deadline, and a keyframe asked for then, again if it does not come.

aiortc NACKs a missing packet once, when a later packet shows the gap, and its jitter buffer waits for
the packet until 512 newer ones have come (1-2 s of video at 640x480): one lost NACK or retransmission
froze the picture that long. Here each missing packet is NACKed at once, then again every ~1.25 round
trips (the round trip measured from a NACK to the retransmission it brings); a gap that blocks the oldest
frame for longer than its deadline (3 round trips, 120-400 ms) is skipped: the buffer moves on to the
next frame that starts after it, tells the generator to stop asking for what it skipped, and asks the
sender for a keyframe (PLI), repeated each round trip until one arrives, so the decoder is clean again.
The frames between are decoded, not held: a moment of smearing, not a freeze.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import MAX_MISORDER, JitterFrame
from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.rtp import RTP_HISTORY_SIZE, RtpPacket
from aiortc.utils import uint16_add, uint16_gt

from . import aiortc_hooks
from .jitter import CAPACITY, MarkerJitterBuffer

log = logging.getLogger(__name__)
Clock = Callable[[], float]


@dataclass
class RoundTrip:
    """The receiver's estimate of the round trip (seconds): a NACK to the retransmission it brought,
    smoothed as TCP smooths its RTT (RFC 6298, 1/8). A packet asked for more than once is timed from its
    first request: an upper bound, so that an estimate too low (retries that come too soon) is corrected
    upwards rather than fed only the samples that beat it."""

    estimate: float = 0.1
    # The round trip a sender on the same connection measures from RTCP receiver reports: preferred when
    # there is one (NACK timings are skewed by reordering), this estimate otherwise (a WHIP ingest).
    reference: Callable[[], float | None] | None = None

    def sample(self, seconds: float) -> None:
        self.estimate += (min(max(seconds, 0.002), 1.0) - self.estimate) / 8

    def current(self) -> float:
        measured = self.reference() if self.reference is not None else None
        return measured if measured else self.estimate

    def retry_after(self) -> float:
        """How long to wait for a retransmission before asking again (a round trip, and the sender's turn)."""
        return 1.25 * self.current() + 0.01

    def deadline(self) -> float:
        """How long a gap may hold the oldest frame back before the buffer skips it: time for a request
        and two retries to be answered, within 120-400 ms."""
        return min(max(3 * self.current() + 0.03, 0.12), 0.4)


@dataclass
class _Asked:
    first_seen: float
    first_sent: float = 0.0
    last_sent: float = float("-inf")
    tries: int = 0


class RetryingNackGenerator(NackGenerator):
    """aiortc's NACK generator, but `missing` is what to NACK *now*: new gaps at once, earlier ones again
    when a round trip and a half has passed without them, for at most `max_tries` or `max_age` seconds."""

    def __init__(
        self, rtt: RoundTrip, clock: Clock = time.monotonic, max_tries: int = 10, max_age: float = 1.0
    ) -> None:
        super().__init__()
        self.rtt, self.clock, self.max_tries, self.max_age = rtt, clock, max_tries, max_age
        self.asked: dict[int, _Asked] = {}  # sequence number -> when first missed, last asked, how often
        # How long a gap waits before its first NACK: packets that arrive out of order fill most gaps within
        # a few ms (jitter reorders them); learnt from the gaps that filled before they were asked for.
        self.reorder_wait = 0.005

    def add(self, packet: RtpPacket) -> bool:
        """Note `packet` (a retransmission too, unwrapped); True when `missing` holds packets to NACK now."""
        now, seq = self.clock(), packet.sequence_number
        if self.max_seq is None:
            self.max_seq = seq
            return False
        if uint16_gt(seq, self.max_seq):
            gap = uint16_add(seq, -self.max_seq) - 1
            first = uint16_add(seq, -min(gap, RTP_HISTORY_SIZE))  # older ones are out of the sender's history
            while uint16_gt(seq, first):
                self.asked[first] = _Asked(now)
                first = uint16_add(first, 1)
            self.max_seq = seq
        else:
            asked = self.asked.pop(seq, None)
            if asked is not None and asked.tries:
                self.rtt.sample(now - (asked.last_sent if asked.tries == 1 else asked.first_sent))
            elif asked is not None:  # out of order, not lost: wait about that long before asking next time
                late = min(1.25 * (now - asked.first_seen), 0.05)
                self.reorder_wait = max(0.98 * self.reorder_wait, late)
        oldest = uint16_add(self.max_seq, -RTP_HISTORY_SIZE)
        retry = self.rtt.retry_after()
        due = []
        for number, asked in list(self.asked.items()):
            if asked.tries >= self.max_tries or now - asked.first_seen > self.max_age or uint16_gt(oldest, number):
                del self.asked[number]
            elif now - asked.last_sent >= retry and now - asked.first_seen >= self.reorder_wait:
                asked.first_sent = asked.first_sent if asked.tries else now
                asked.last_sent, asked.tries = now, asked.tries + 1
                due.append(number)
        self.missing = set(due)
        return bool(due)

    def forget_before(self, seq: int) -> None:
        """Stop asking for packets older than `seq` (the jitter buffer gave them up)."""
        for number in list(self.asked):
            if uint16_gt(seq, number):
                del self.asked[number]


def _vp8_starts_frame(packet: RtpPacket) -> bool:
    """VP8's payload descriptor (RFC 7741): S set and partition 0 is a frame's first packet."""
    return bool(packet.payload) and bool(packet.payload[0] & 0x10) and packet.payload[0] & 0x07 == 0


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
        self.blocked_since: float | None = None  # when a gap first held the oldest frame back
        self.awaiting_key = False
        self.last_pli = float("-inf")
        self.skips = 0  # gaps given up
        self.keyframe_requests = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self.newest is None or uint16_gt(seq, self.newest) or uint16_add(self.newest, -seq) >= MAX_MISORDER:
            self.newest = seq  # newer, or a sender that started over (aiortc's buffer resets then too)
        pli, frame = super().add(packet)
        try:
            return self._recover(pli, frame)
        except Exception:  # this runs in aiortc's receive loop: a bug here must not end the connection
            log.exception("loss recovery failed; the buffer goes on as aiortc's")
            return pli, frame

    def _recover(self, pli: bool, frame: JitterFrame | None) -> tuple[bool, JitterFrame | None]:
        now = self.clock()
        if frame is None and self._blocked():
            if self.blocked_since is None:
                self.blocked_since = now
            elif now - self.blocked_since > self.rtt.deadline():
                frame = self._skip()
                self.awaiting_key, self.last_pli = True, float("-inf")
        else:
            self.blocked_since = None
        if pli:  # aiortc's own reasons (a jump, an overflow) also spoil the decoder's references
            self.awaiting_key, self.last_pli = True, now
        if frame is not None and self.awaiting_key and is_keyframe(frame):
            self.awaiting_key = False
        if self.awaiting_key and now - self.last_pli >= max(self.rtt.retry_after(), 0.05):
            pli, self.last_pli = True, now
        self.keyframe_requests += pli
        return pli, frame

    def _blocked(self) -> bool:
        """Whether a gap sits before the newest packet (the oldest frame cannot complete yet); looks only
        from the oldest packet to the newest, a frame's worth when nothing is lost."""
        if self._origin is None or self.newest is None:
            return False
        span = uint16_add(self.newest, -self._origin) + 1
        if span > self.capacity:
            return False
        for index, packet in enumerate(aiortc_hooks.buffered(self)):
            if index >= span:
                return False
            if packet is None:
                return True
        return False

    def _skip(self) -> JitterFrame | None:
        """Drop everything before the first frame that starts after the first gap; returns that frame if it
        is already complete."""
        self.skips += 1
        self.blocked_since = None
        slots = list(aiortc_hooks.buffered(self))
        first_gap = next((i for i, p in enumerate(slots) if p is None), None)
        after = [i for i, p in enumerate(slots) if p is not None and first_gap is not None and i > first_gap]
        if first_gap is None or not after:
            return None  # nothing waits behind a gap after all
        held = {p.timestamp for p in slots[:first_gap] if p is not None}
        start = None
        for i in range(first_gap + 1, len(slots)):
            packet = slots[i]
            if packet is None or packet.timestamp in held:
                continue
            before = slots[i - 1]
            if (before is not None and before.timestamp != packet.timestamp) or (
                packet.payload_type in self.vp8_types and _vp8_starts_frame(packet)
            ):
                start = i
                break
        if start is None:  # no frame start seen yet: keep only the packets of the newest timestamp
            stamp = slots[after[-1]].timestamp  # type: ignore[union-attr]
            start = next(i for i in after if slots[i].timestamp == stamp)  # type: ignore[union-attr]
        self.remove(start)
        if self.nacks is not None and self._origin is not None:
            self.nacks.forget_before(self._origin)
        return self._complete()


def recover_losses(pc: RTCPeerConnection, clock: Clock = time.monotonic) -> list[RecoveringJitterBuffer]:
    """Fit `pc`'s video receivers with retried NACKs and a buffer that skips what cannot be repaired in
    time (call after setRemoteDescription, before media flows); returns the buffers (their counters)."""
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
        buffers.append(buffer)
    return buffers
