"""The bitrate sent back under a narrow link: aiortc follows the receiver's estimate (REMB) alone, and that
estimate is delay-based, which a full drop-tail queue blinds (the delay stops growing while the queue
drops). Here each receiver report also caps the encoder's target, as libwebrtc's loss-based controller does
with the rate the receiver acknowledged: from its highest sequence number and the packets it counts lost,
the packets that got through since the last report, so the bitrate that got through (`delivered`); with
the loss it reports over that interval:

- over 20% lost (a queue overflowing: a few percent of random loss seldom reports that much), the cap goes
  straight to what got through times a margin (0.85), so the queue drains;
- 10-20% lost: it falls to the rate sent less half the loss;
- under 2% it rises 8% a report, to at most 1.5 times what got through; once it nears (0.85 times) the most
  the link was seen to carry since it last overflowed, it holds there for 10 clean reports, then rises 2% a
  report (the link may have widened);
- between (2-10%), it holds (random loss: NACKs and FEC repair it), unless more is being sent than the link
  last carried and 2% more is lost than while sending within it (RANDOM): then the loss is the link's, and
  the cap goes to what got through times the margin;
- a bound link that loses 2-10% in three reports in a row while no more than it carried is sent was random
  loss taken for a queue's (a link loses from sending beyond it): it is forgotten, FEC, which a bound link
  turns off, comes back, and the cap goes back to what it was when the link was found bound (at most 1.5
  times what got through; clean reports, rare at such loss, would take the rest of the call to raise it).
  One found overflowing again soon after (REFOUND) was a narrow link losing at random besides: from then on
  it takes twice the doubts to forget.
  At 5% bursty loss, reports came within reach of the overflow tests (up to 17% lost, as little as 80% of
  what was sent through, in eight traced runs of 15 s), and three runs in 36 fell to 1.2-2.2 Mb/s received
  and froze 1.3-2.2 s, as such a false alarm does: FEC stayed off for the rest of the call, and every lossy
  report that sent more than the "link" carried, or lost 10-20%, lowered the cap again. Each decision is
  counted (`Follower.stats`: the session's `link_overflows`, `links_forgotten`, `bitrate_cap_kbps`) and
  logged.

It never goes under a floor that still carries a picture. Retransmissions are held to a budget (half the
encoder's target; 15% while a link that overflowed loses over 10%), so that a burst of NACKs for what an
overfilled queue dropped does not overfill it again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.rtp import RtcpReceiverInfo

from . import aiortc_hooks
from .encoders import BitrateCeiling
from .nacks import Clock
from .resend import COPIES, Resender

log = logging.getLogger(__name__)

FLOOR = 150_000  # b/s: 640x480 VP8 still moves at this rate
CONGESTED = 0.10  # a reported loss above this is the link's queue overflowing, not random loss
OVERFLOWING = 0.20  # above this, certainly: the cap goes to what got through
QUEUED = 0.75  # less than this share of what was sent got through: the rest waits in a queue, or was dropped
CLEAN = 0.02  # under this the cap may rise
# Reports in a row, while bound, that lose 2-10% sending no more than the link carried: then the loss is the
# network's, not a queue's (the first report after the cap came down may still see the queue's last drops).
DOUBTS = 3
# How fast the loss seen while sending within the link (or with none known) is followed: a link that loses
# that much at random is "beyond" itself only when it loses 2% more than that. Without it, a narrow link
# that also lost 5% at random read its own random loss as overflowing whenever what went out (the encoder's
# overshoot, resends) ran a few percent over what it last carried: 8-12 "overflows" in 15 s, the cap down to
# the floor in one run.
RANDOM = 0.25
# A link found overflowing again within this many reports of being forgotten was a narrow link losing at
# random besides: forgetting it, and giving back its cap, overfilled it again. It then takes twice the doubts
# it took before (up to MAX_DOUBTS) to be forgotten.
REFOUND = 10
MAX_DOUBTS = 48
MARGIN = 0.85  # of what got through: room for the queue to drain, for retransmissions and keyframes
RISE = 1.08  # a clean report's rise
PROBE = 1.02  # a clean report's rise near what the link carried when it last overflowed...
HOLD = 10  # ...after this many clean reports there (10-15 s): a narrow link seldom widens sooner
HEADROOM = 1.5  # a rise goes at most this far above what the last report saw delivered
OVERHEAD = 34  # bytes a packet carries besides its payload: RTP header, extensions, SRTP's tag
RESEND_SHARE = 0.5  # of the encoder's target: what retransmissions may take
RESEND_SHARE_CONGESTED = 0.15  # while the link is congested (the margin the cap leaves)
RESEND_BURST = 0.25  # seconds of the retransmission budget that may go at once
IN_FLIGHT = 0.1  # s: what was sent this long before a report had not reached the receiver when it wrote it


@dataclass
class LossBasedCap:
    """The cap from one receiver report at a time: the fraction of packets it says were lost and, when known,
    the bitrate that got through (`delivered`) and that was sent (`sent`) over its interval."""

    ceiling: int
    floor: int = FLOOR
    cap: float = 0.0
    link: float | None = None  # b/s: the most the link carried since it last overflowed
    clean: int = 0  # clean reports since it last overflowed
    bound: bool = False  # the cap is held under the ceiling by the link's overflow (until it is back up)
    doubts: int = 0  # reports in a row, while bound, that lost 2-10% sending no more than the link carried
    overflows: int = 0  # reports taken for the link's queue overflowing (the cap went to what got through)
    before: float = 0.0  # the cap when the link was last found bound (what a forgotten link gives back)
    forgotten: int = 0  # links forgotten as random loss (DOUBTS)
    needed: int = DOUBTS  # the doubts that forget a link now (doubled each time one is found again, REFOUND)
    since_forgotten: int | None = None  # reports since a link was last forgotten
    random: float = 0.0  # the loss reports show while no more than the link carried is sent (RANDOM)

    def __post_init__(self) -> None:
        self.cap = float(self.ceiling)

    def update(self, fraction_lost: float, delivered: float | None = None, sent: float | None = None) -> int:
        if delivered is None or sent is None:  # no rates yet: by the loss alone
            if fraction_lost > CONGESTED:
                self.lower(self.cap * (1 - 0.5 * fraction_lost))
            elif fraction_lost < CLEAN:
                self.cap = min(float(self.ceiling), self.cap * RISE)
            return int(self.cap)
        beyond = self.link is not None and sent > self.link
        queued = sent > self.floor and delivered < QUEUED * sent  # a queue filling before it drops
        doubted = False  # whether this report is one more that lost 2-10% under a bound link
        if self.since_forgotten is not None:
            self.since_forgotten += 1
        if fraction_lost > OVERFLOWING or queued or (fraction_lost > CLEAN + self.random and beyond):
            if not self.bound:
                self.before = self.cap
                if self.since_forgotten is not None and self.since_forgotten <= REFOUND:
                    self.needed = min(2 * self.needed, MAX_DOUBTS)  # it was a link after all
            self.link, self.clean, self.bound = delivered, 0, True
            self.overflows += 1
            self.lower(MARGIN * delivered)
            # Rare on a link that is not narrow (a call's bitrate falls here): worth a line in the log.
            log.info(
                "link overflowing: %.0f%% lost, %.0f of %.0f kb/s through; cap %.0f kb/s",
                100 * fraction_lost,
                delivered / 1000,
                sent / 1000,
                self.cap / 1000,
            )
        elif fraction_lost > CONGESTED:
            self.lower(min(self.cap, sent) * (1 - 0.5 * fraction_lost))
        elif fraction_lost < CLEAN:
            self.clean += 1
            top = min(float(self.ceiling), max(self.cap, HEADROOM * delivered))
            rise = self.cap * RISE
            if self.link is not None:
                self.link = max(self.link, delivered)
                if rise > MARGIN * self.link:  # near what the link carried: up to the margin, then after a while probe
                    rise = self.cap * PROBE if self.clean > HOLD else MARGIN * self.link
            self.cap = max(self.cap, min(top, rise))
        elif self.bound and not beyond:  # 2-10% lost within the link: the cap holds, and doubts it
            doubted = True
        if not beyond and fraction_lost <= CONGESTED:
            self.random += RANDOM * (fraction_lost - self.random)
        self.doubts = self.doubts + 1 if doubted else 0
        if self.doubts >= self.needed:  # lost under what the link carried: random loss, not its queue
            self.link, self.bound, self.doubts, self.since_forgotten = None, False, 0, 0
            self.forgotten += 1
            # Its overflow was the network's loss too: the cap goes back to where it was (at most HEADROOM over
            # what got through), or it would stay there, since at a few percent of random loss the clean
            # reports that raise it are rare (a run at 5% ended at 762 kb/s), and each false alarm lower still.
            self.cap = max(self.cap, min(self.before, HEADROOM * delivered))
            log.info(
                "link forgotten: %d reports lost 2-10%% within it (random loss); cap %.0f kb/s",
                self.needed,
                self.cap / 1000,
            )
        self.bound = self.bound and self.cap < self.ceiling
        return int(self.cap)

    def lower(self, cap: float) -> int:
        """The cap brought down to `cap` (not under the floor), if it is above."""
        self.cap = max(float(self.floor), min(self.cap, cap))
        return int(self.cap)


class ResendBudget:
    """Resends a NACKed packet (`retransmit`) only while the budget allows: `rate()` bytes a second, up to
    RESEND_BURST seconds of it at once, each resend costing `size` bytes (a packet's usual size)."""

    def __init__(self, retransmit: Callable[[int], Awaitable[None]], rate: Callable[[], float], clock: Clock) -> None:
        self.retransmit, self.rate, self.clock = retransmit, rate, clock
        self.size = 1200.0
        self.tokens = 0.0
        self.last: float | None = None
        self.refused = 0
        self.resent = 0.0  # bytes resent (at `size` each)

    def allows(self) -> bool:
        now, rate = self.clock(), self.rate()
        burst = max(RESEND_BURST * rate, 2 * self.size)
        self.tokens = burst if self.last is None else min(burst, self.tokens + rate * (now - self.last))
        self.last = now
        if self.tokens < self.size:
            self.refused += 1
            return False
        self.tokens -= self.size
        self.resent += self.size
        return True

    async def __call__(self, sequence: int) -> None:
        if self.allows():
            await self.retransmit(sequence)


@dataclass
class _Mark:
    """Where a sender stood at a receiver report (or when it started): what it had sent (its media's packets
    and payload bytes), and what the report said the receiver had (the highest sequence number, the packets
    lost so far)."""

    when: float
    media: tuple[int, int]
    highest: int
    lost: int


class Follower:
    """One video sender's cap and resend budget, moved by each receiver report about its stream.

    Over each report's interval: what got through, from the packets the report says the receiver got (at the
    size of what the transport sent then) and the resends that went (as many of them got through); and what
    was sent, from what the transport sent until IN_FLIGHT before the report (what went after had not reached
    the receiver: a keyframe just sent is not taken for a queue). The cap (LossBasedCap) is on all that the
    connection sends; the encoder gets the media's share of what is not resends (FEC and RTCP take the rest)."""

    def __init__(self, encoder: BitrateCeiling, resender: Resender | None = None, clock: Clock = time.monotonic):
        self.encoder, self.resender, self.clock = encoder, resender, clock
        self.cap = LossBasedCap(encoder.ceiling)
        self.mark: _Mark | None = None
        self.sent: deque[tuple[float, int, int, float]] = deque()  # (when, wire packets, wire bytes, resent bytes)
        self.share = 1.0  # of what the transport sends besides resends, the media's (payload and headers)
        self.congested = False
        self.budget: ResendBudget | None = None
        if resender is not None:
            self.budget = ResendBudget(resender.retransmit, self.resend_rate, clock)
            resender.retransmit = self.budget

    def stats(self) -> dict[str, int]:
        """What the session's stats show of it: how often a report was taken for the link overflowing, how
        often such a link was forgotten as random loss, and the cap now (kb/s)."""
        cap = self.cap
        return {
            "link_overflows": cap.overflows,
            "links_forgotten": cap.forgotten,
            "bitrate_cap_kbps": round(cap.cap / 1000),
        }

    def resend_rate(self) -> float:
        """Bytes a second retransmissions may take."""
        return (RESEND_SHARE_CONGESTED if self.congested else RESEND_SHARE) * self.encoder.target_bitrate / 8

    def look(self, wire: tuple[int, int], media: tuple[int, int], newest: int | None) -> None:
        """What the sender has sent by now (every 0.05 s): its transport `wire` (packets, bytes), its media
        (packets, payload bytes), and the newest media packet's sequence number; the receiver's count starts
        at the first of them."""
        now = self.clock()
        self.sent.append((now, wire[0], wire[1], self.budget.resent if self.budget is not None else 0.0))
        while len(self.sent) > 2 and now - self.sent[1][0] > 5.0:
            self.sent.popleft()
        if self.mark is None and media[0] > 0 and newest is not None:
            first = (newest - media[0] + 1) & 0xFFFF
            self.mark = _Mark(now, (0, 0), highest=(first - 1) & 0xFFFF, lost=0)

    def _sent_by(self, when: float) -> tuple[float, int, int, float]:
        """The last look at or before `when` (the first if none)."""
        found = self.sent[0]
        for look in self.sent:
            if look[0] > when:
                break
            found = look
        return found

    def report(self, report: RtcpReceiverInfo, media: tuple[int, int]) -> None:
        """A receiver report about the stream, when the sender had sent `media` (packets, payload bytes)."""
        now, fraction_lost = self.clock(), report.fraction_lost / 256  # RFC 3550: an 8-bit fixed-point fraction
        mark = _Mark(now, media, report.highest_sequence & 0xFFFF, report.packets_lost)
        delivered = sent = None
        last = self.mark
        if last is not None and self.sent and now - last.when > 0.05:
            _, packets0, bytes0, resent0 = self._sent_by(last.when)
            _, packets1, bytes1, resent1 = self.sent[-1]
            _, _, early0, _ = self._sent_by(last.when - IN_FLIGHT)
            _, _, early1, _ = self._sent_by(now - IN_FLIGHT)
            if packets1 > packets0 and bytes1 > bytes0 and early1 > early0:
                seconds, size, resends = now - last.when, (bytes1 - bytes0) / (packets1 - packets0), resent1 - resent0
                received = ((mark.highest - last.highest) & 0xFFFF) - (mark.lost - last.lost)
                # resends crossed the link too, as many of them as of the rest
                delivered = (max(received, 0) * size + resends * (1 - fraction_lost)) * 8 / seconds
                sent = (early1 - early0) * 8 / seconds
                media_packets, media_bytes = media[0] - last.media[0], media[1] - last.media[1]
                stream = max(bytes1 - bytes0 - resends, 1.0)  # media and FEC, and RTCP
                self.share = min(max((media_bytes + OVERHEAD * media_packets) / stream, 0.3), 1.0)
                if self.budget is not None:
                    self.budget.size = size
        self.mark = mark
        cap = self.cap.update(fraction_lost, delivered, sent)
        self.encoder.cap(cap if cap >= self.cap.ceiling else int(cap * self.share))
        self.encoder.link_bound = self.cap.bound
        # Congested: a narrow link losing what overflows its queue. A report of 10-20% on a link that never
        # overflowed is a long burst of random loss, where the further copies of a resend are what helps.
        self.congested = fraction_lost > CONGESTED and self.cap.bound
        if self.resender is not None:
            self.resender.copies = 1 if self.congested else COPIES


def totals(followers: list[Follower]) -> dict[str, int | None]:
    """The counters of all of a connection's `followers`, summed, and the lowest cap (None without one)."""
    stats = [f.stats() for f in followers]
    return {
        "link_overflows": sum(s["link_overflows"] for s in stats),
        "links_forgotten": sum(s["links_forgotten"] for s in stats),
        "bitrate_cap_kbps": min((s["bitrate_cap_kbps"] for s in stats), default=None),
    }


async def follow_losses(pc: RTCPeerConnection, every: float = 0.05, followers: list[Follower] | None = None) -> None:
    """Fit each video sender of `pc` with a Follower (its cap and resend budget, moved by each receiver report
    and the NACKs between them), for as long as `pc` lives; resend NACKed packets three times (resend.py) unless a
    link that overflowed reports over 10% lost (more copies would only fill its queue). Looks at what each
    has sent every `every` seconds; each Follower made is added to `followers`, if given (the session's stats)."""
    fitted: dict[int, tuple[RTCRtpSender, Follower]] = {}
    while pc.connectionState not in ("closed", "failed"):
        for sender in pc.getSenders():
            encoder = aiortc_hooks.encoder(sender)
            if sender.kind != "video" or not isinstance(encoder, BitrateCeiling) or id(sender) in fitted:
                continue
            resender = aiortc_hooks.retransmitter(sender)
            follower = Follower(encoder, resender if isinstance(resender, Resender) else None)
            fitted[id(sender)] = (sender, follower)
            if followers is not None:
                followers.append(follower)

            def tell(report: RtcpReceiverInfo, sender: RTCRtpSender = sender, follower: Follower = follower) -> None:
                follower.report(report, aiortc_hooks.sent(sender))

            aiortc_hooks.on_receiver_reports(sender, tell)
        for sender, follower in fitted.values():
            newest = aiortc_hooks.newest_sequence(sender) if follower.mark is None else None
            follower.look(aiortc_hooks.transport_sent(sender), aiortc_hooks.sent(sender), newest)
        await asyncio.sleep(every)
