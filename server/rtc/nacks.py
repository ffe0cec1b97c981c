"""What a video receiver asks to have resent: each missing packet NACKed once it is later than packets
usually come out of order, then again every ~1.25 round trips until it comes or is too old to matter; due
times are checked on each packet and, between packets, by `recovery.recover_losses`'s timer (`poll`)."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiortc.mediastreams import VIDEO_CLOCK_RATE
from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.rtp import RTP_HISTORY_SIZE, RtpPacket
from aiortc.utils import uint16_add, uint16_gt

Clock = Callable[[], float]

REORDER_SAMPLES = 64  # the reordered packets the wait before a first NACK is learnt from
REORDER_QUANTILE = 0.9  # the share of them the wait lets fill their gap unasked (libwebrtc waits the median)
MAX_REORDER_WAIT = 0.05  # s


def spacing(round_trip: float) -> float:
    """Between the copies of a request (here) and of a resend (resend.py): a fifth of the round trip, 10-30
    ms, past most loss bursts and well within the round trip a retry waits."""
    return min(max(0.2 * round_trip, 0.01), 0.03)


# A request's repeats, a fifth of a round trip apart: with one, at 5% bursty loss each way about one repair
# in a hundred still failed (the repeat, 20 ms after a lost request, is lost about twice as often as any
# packet), a 200-250 ms freeze each. A NACK is a few dozen bytes.
ECHOES = 2
# A silence: no new packet for this long past the usual frame interval and reordering. A burst at 5% loss
# (mean run 2) took 5 packets in a row about twice in 15 s, on the way in often 2-3 whole frames and their
# FEC: the gap then showed only when the next packet came, 120 ms after the last, and the picture waited
# that plus a round trip (215-225 ms, traced). After a silence the packets that should have come are asked
# for by number; a sender resends those it has sent and passes over the rest.
SILENCE_FRAMES = 1.5  # frame intervals at least
# A silence after which the next packet is the next in line lost nothing (a sender or host that paused, a
# frame the encoder dropped, a queue's delay swinging): each such widens the next silence by SILENCE_WIDEN, up
# to SILENCE_WIDEST times, and each that lost packets narrows it back. On loopback in the suite, with the
# server's pipeline sharing two cores, two or three came a second, and their resends of packets still on
# their way overfilled a 600 kb/s link.
SILENCE_WIDEN = 1.5
SILENCE_WIDEST = 4.0
MAX_AHEAD = 16  # packets asked for ahead of the newest (one NACK's FCI covers 17)


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

    def measured(self) -> float | None:
        """The round trip from RTCP, if there is one."""
        return (self.reference() or None) if self.reference is not None else None

    def current(self) -> float:
        return self.measured() or self.estimate

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
    echoed: int = 0  # this try's request sent again this many times


class RetryingNackGenerator(NackGenerator):
    """aiortc's NACK generator, but `missing` is what to NACK *now*: a gap once it is later than reordering
    explains, again when 1.25 round trips have passed without it, for at most `max_tries` or `max_age`
    seconds. Each request goes out again `echoes` times, a fifth of a round trip apart (10-30 ms), so a lost
    request rarely costs another round trip (at 5% loss each way, one try in ten failed with none; a
    picture waits a round trip more for it). A sender that answers each with copies (resend.py) takes the
    echoes for what they are; a browser resends a packet at most once a round trip."""

    def __init__(
        self,
        rtt: RoundTrip,
        clock: Clock = time.monotonic,
        max_tries: int = 10,
        max_age: float = 1.0,
        echoes: int = ECHOES,
    ) -> None:
        super().__init__()
        self.rtt, self.clock, self.max_tries, self.max_age, self.echoes = rtt, clock, max_tries, max_age, echoes
        self.asked: dict[int, _Asked] = {}  # sequence number -> when first missed, last asked, how often
        # How long a gap waits before its first NACK: packets that arrive out of order fill most gaps within
        # a few ms (jitter reorders them). Learnt from how late the last REORDER_SAMPLES packets that filled
        # a gap before it was asked for came: 1.25 times their REORDER_QUANTILE (only what beat the wait is
        # seen, and 1.25 x 0.9 > 1 lets the wait grow until it covers that share). A maximum would let one
        # late packet (a stall on either host) add tens of ms to every repair that follows. (Counting a
        # packet that came sooner after its NACK than the RTCP round trip allows as reordered instead fed
        # the wait its own length: on loopback, where RTCP's round trip is inflated by the hosts, it climbed
        # to 50 ms.)
        self.reorder_wait = 0.005
        self.lateness: deque[float] = deque(maxlen=REORDER_SAMPLES)
        self.ssrc: int | None = None  # the media stream's, from its packets (what a NACK names)
        # For silences: when the newest packet came, the frame interval and packets a frame (learnt from the
        # RTP timestamps of new packets, 1/8 a frame), and whether this silence was asked about.
        self.newest_at: float | None = None
        self.timestamp: int | None = None
        self.interval = 1 / 30
        self.per_frame = 0.0  # until a first frame is complete
        self.in_frame = 0
        self.silence_asked = False
        self.silences = 0  # silences asked about
        self.false_silences = 0  # of them, those after which nothing was missing
        self.widening = 1.0  # of the silence (SILENCE_WIDEN)

    def add(self, packet: RtpPacket) -> bool:
        """Note `packet` (a retransmission too, unwrapped); True when `missing` holds packets to NACK now."""
        now, seq = self.clock(), packet.sequence_number
        self.ssrc = packet.ssrc
        if self.max_seq is None:
            self.max_seq = seq
            self._newest(packet, now)
            return False
        if uint16_gt(seq, self.max_seq):
            if self.silence_asked:
                self._heard_after_silence(seq == uint16_add(self.max_seq, 1))
            self._newest(packet, now)
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
                self._reordered(now - asked.first_seen)
        return self._due(now)

    def poll(self) -> list[int]:
        """What to NACK now, without a packet: a gap's first request, retry or echo falls due between packets
        too (after a frame's last packet the next comes a frame interval later, up to 33 ms at 30 fps, which
        each repair would otherwise wait on), and after a silence (SILENCE_FRAMES) the packets that should have
        come. Sorted; empty when nothing is due."""
        now = self.clock()
        due = set(self.missing) if self.asked and self._due(now) else set()
        if self.max_seq is not None and not self.silence_asked and self.until_silence(now) <= 0:
            self.silence_asked, self.silences = True, self.silences + 1
            ahead = min(MAX_AHEAD, max(2, math.ceil(self.per_frame * self.silence() / self.interval)))
            due.update(uint16_add(self.max_seq, k) for k in range(1, ahead + 1))
        return sorted(due)

    def silence(self) -> float:
        """How long without a new packet is a silence: a frame interval and twice the reordering wait (jitter
        spreads the gap between two frames' packets by up to twice), at least SILENCE_FRAMES intervals, widened
        after silences that lost nothing."""
        return self.widening * max(SILENCE_FRAMES * self.interval, self.interval + 2 * self.reorder_wait)

    def _heard_after_silence(self, nothing_missing: bool) -> None:
        if nothing_missing:
            self.false_silences += 1
            self.widening = min(self.widening * SILENCE_WIDEN, SILENCE_WIDEST)
        else:
            self.widening = max(self.widening / SILENCE_WIDEN, 1.0)

    def until_silence(self, now: float) -> float:
        """Seconds until the present lull is a silence (<= 0: it is; inf before any packet)."""
        if self.newest_at is None:
            return float("inf")
        return self.newest_at + self.silence() - now

    def _newest(self, packet: RtpPacket, now: float) -> None:
        """Note a packet newer than any before: the silence clock starts again, and the frame interval and
        packets a frame are learnt."""
        self.newest_at, self.silence_asked = now, False
        if self.timestamp is None or packet.timestamp == self.timestamp:
            self.timestamp = packet.timestamp
            self.in_frame += 1
            return
        interval = ((packet.timestamp - self.timestamp) & 0xFFFFFFFF) / VIDEO_CLOCK_RATE
        if 0 < interval < 0.5:  # not a wrap, a restart or a timestamp from before
            self.interval += (interval - self.interval) / 8
            self.per_frame += (self.in_frame - self.per_frame) / (8 if self.per_frame else 1)
        self.timestamp, self.in_frame = packet.timestamp, 1

    def _due(self, now: float) -> bool:
        """Set `missing` to what is due at `now` (forgetting what is too old or asked too often); True if any."""
        if self.max_seq is None:
            return False
        oldest = uint16_add(self.max_seq, -RTP_HISTORY_SIZE)
        retry = self.rtt.retry_after()
        echo = spacing(self.rtt.current())
        due = []
        for number, asked in list(self.asked.items()):
            if asked.tries >= self.max_tries or now - asked.first_seen > self.max_age or uint16_gt(oldest, number):
                del self.asked[number]
            elif now - asked.last_sent >= retry and now - asked.first_seen >= self.reorder_wait:
                asked.first_sent = asked.first_sent if asked.tries else now
                asked.last_sent, asked.tries, asked.echoed = now, asked.tries + 1, 0
                due.append(number)
            elif asked.tries and asked.echoed < self.echoes and now - asked.last_sent >= echo * (asked.echoed + 1):
                asked.echoed += 1
                due.append(number)
        self.missing = set(due)
        return bool(due)

    def _reordered(self, late: float) -> None:
        self.lateness.append(min(late, MAX_REORDER_WAIT / 1.25))
        ranked = sorted(self.lateness)
        self.reorder_wait = max(1.25 * ranked[int(REORDER_QUANTILE * (len(ranked) - 1))], 0.002)

    def forget_before(self, seq: int) -> None:
        """Stop asking for packets older than `seq` (the jitter buffer gave them up)."""
        for number in list(self.asked):
            if uint16_gt(seq, number):
                del self.asked[number]
