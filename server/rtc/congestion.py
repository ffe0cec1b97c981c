"""The bitrate sent back under a narrow link: aiortc follows the receiver's estimate (REMB) alone, and that
estimate is delay-based, which a full drop-tail queue blinds (the delay stops growing while the queue
drops). Here the loss the receiver reports (RTCP receiver reports' fraction lost) also caps the encoder's
target, as libwebrtc's loss-based controller does: above 10% lost the cap falls by half the loss, below
2% it rises 8% a report, between it holds; it never goes under a floor that still carries a picture.
Random loss of a few percent (Wi-Fi) leaves it alone: NACKs repair that."""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass

from aiortc import RTCPeerConnection

from . import aiortc_hooks
from .encoders import BitrateCeiling
from .resend import Resender

FLOOR = 150_000  # b/s: 640x480 VP8 still moves at this rate
CONGESTED = 0.10  # a reported loss above this is the link's queue overflowing, not random loss


@dataclass
class LossBasedCap:
    """The cap from the fraction of packets the receiver reports lost, one report at a time."""

    ceiling: int
    floor: int = FLOOR
    cap: float = 0.0

    def __post_init__(self) -> None:
        self.cap = float(self.ceiling)

    def update(self, fraction_lost: float) -> int:
        if fraction_lost > CONGESTED:
            self.cap = max(float(self.floor), self.cap * (1 - 0.5 * fraction_lost))
        elif fraction_lost < 0.02:
            self.cap = min(float(self.ceiling), self.cap * 1.08)
        return int(self.cap)


async def follow_losses(pc: RTCPeerConnection, every: float = 0.5) -> None:
    """Cap each video sender of `pc` by the loss its receiver reports, for as long as `pc` lives; resend NACKed
    packets twice (resend.py) only while the reported loss is under 10% (above it the link is congested, not
    lossy: a second copy would only fill its queue)."""
    caps: dict[int, LossBasedCap] = {}
    seen: dict[int, datetime.datetime] = {}
    while pc.connectionState not in ("closed", "failed"):
        await asyncio.sleep(every)
        for sender in pc.getSenders():
            encoder = aiortc_hooks.encoder(sender)
            if sender.kind != "video" or not isinstance(encoder, BitrateCeiling):
                continue
            reports = [s for s in (await sender.getStats()).values() if s.type == "remote-inbound-rtp"]
            if not reports or seen.get(id(sender)) == reports[0].timestamp:
                continue  # no receiver report yet, or none since the last look
            seen[id(sender)] = reports[0].timestamp
            cap = caps.setdefault(id(sender), LossBasedCap(encoder.ceiling))
            fraction_lost = reports[0].fractionLost / 256  # RFC 3550: an 8-bit fixed-point fraction
            encoder.cap(cap.update(fraction_lost))
            resender = aiortc_hooks.retransmitter(sender)
            if isinstance(resender, Resender):
                resender.twice = fraction_lost <= CONGESTED
