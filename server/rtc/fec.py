"""Forward error correction for video: ULPFEC (RFC 5109) inside RED (RFC 2198), as browsers negotiate it.

A NACK repair costs a round trip (200 ms or more at 40 ms each way with a loss each way in series); FEC
packets sent right after each frame let the receiver rebuild a lost packet without one. Where both peers
negotiate `red/90000` and `ulpfec/90000` (and RTX with apt=red), every media packet goes out wrapped in RED
(the primary block only, as libwebrtc sends video) and, after each frame's last packet, a few FEC packets
in the same sequence space: FEC packet j covers the frame's media packets i with i % k == j, so that a burst
of up to k consecutive losses costs each FEC packet at most one of its packets. How many (k) follows the
loss the receiver reports, none on a clean link (like libwebrtc's protection factor). The receiver unwraps
RED before anything else sees the packet (the NACK generator, the jitter buffer), keeps recent media
packets, and when a FEC packet finds exactly one of its packets missing it rebuilds it (the XOR of the
header fields and payloads) and hands it on as if it had come, so it is not NACKed.

Everything works on the RTP packets' bytes, between SRTP and aiortc's parser (see `protect`): a FEC
packet protects each packet's header extensions too, as they went out, so a browser's receiver rebuilds
the same bytes. Repaired packets (FEC, RTX) are not counted as received in the receiver reports, as
libwebrtc does not count them: the sender sizes its protection, and congestion.py its bitrate, from the
loss before repair.
"""

from __future__ import annotations

import logging
import math
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiortc import RTCPeerConnection, RTCRtpCodecParameters, RTCRtpSender
from aiortc.mediastreams import VIDEO_CLOCK_RATE
from aiortc.rtp import RtcpRrPacket, RtcpSrPacket, is_rtcp

from . import aiortc_hooks
from .encoders import BitrateCeiling
from .resend import Resender
from .sdp import fec_payload_types

log = logging.getLogger(__name__)

HEADER = 12  # bytes of RTP's fixed header
FEC_HEADER = 10  # RFC 5109's FEC header
MAX_MASK = 48  # packets one FEC packet can cover (the long mask, L=1)
HISTORY = 512  # packets kept for RTX (sequence numbers now also count FEC packets) and for recovery


# ---------------------------------------------------------------------------------------------------------
# Packet formats: pure functions on bytes.


def seq_of(data: bytes) -> int:
    return int.from_bytes(data[2:4], "big")


def ssrc_of(data: bytes) -> int:
    return int.from_bytes(data[8:12], "big")


def header_length(data: bytes) -> int:
    """The RTP header's length with its CSRC list and header extension (where the payload starts)."""
    length = HEADER + 4 * (data[0] & 0x0F)
    if data[0] & 0x10 and len(data) >= length + 4:
        length += 4 + 4 * int.from_bytes(data[length + 2 : length + 4], "big")
    return length


def with_header(
    data: bytes, payload_type: int | None = None, seq: int | None = None, marker: int | None = None
) -> bytes:
    """`data` with its payload type, sequence number or marker bit replaced."""
    first = data[1]
    if payload_type is not None:
        first = (first & 0x80) | payload_type
    if marker is not None:
        first = (first & 0x7F) | (marker << 7)
    number = data[2:4] if seq is None else struct.pack("!H", seq & 0xFFFF)
    return data[:1] + bytes([first]) + number + data[4:]


def red_wrap(media: bytes, red_pt: int) -> bytes:
    """A media packet as RED with the primary block only (RFC 2198: F=0 and the block's payload type)."""
    at = header_length(media)
    return with_header(media[:at], red_pt) + bytes([media[1] & 0x7F]) + media[at:]


def red_unwrap(red: bytes) -> tuple[int, bytes] | None:
    """(the primary block's payload type, the packet as it would have been without RED); None if malformed.
    Redundant blocks (F=1) before the primary are skipped: they repeat older packets."""
    at = header_length(red)
    pos = at
    while pos < len(red) and red[pos] & 0x80:  # a redundant block's 4-byte header
        pos += 4
    if pos >= len(red):
        return None
    block_pt = red[pos] & 0x7F
    skipped = sum(int.from_bytes(red[p + 2 : p + 4], "big") & 0x3FF for p in range(at, pos, 4))
    start = pos + 1 + skipped
    if start > len(red):
        return None
    return block_pt, with_header(red[:at], block_pt) + red[start:]


def rtx_wrap(packet: bytes, rtx_pt: int, rtx_seq: int, rtx_ssrc: int) -> bytes:
    """RFC 4588: the packet on the RTX stream, its original sequence number first in the payload."""
    at = header_length(packet)
    head = with_header(packet[:at], rtx_pt, rtx_seq)
    return head[:8] + struct.pack("!I", rtx_ssrc) + head[12:] + packet[2:4] + packet[at:]


def rtx_unwrap(rtx: bytes, payload_type: int, ssrc: int) -> bytes | None:
    """The original packet of an RTX packet, as `payload_type` on `ssrc`; None if too short."""
    at = header_length(rtx)
    if len(rtx) < at + 2:
        return None
    head = with_header(rtx[:at], payload_type, int.from_bytes(rtx[at : at + 2], "big"))
    return head[:8] + struct.pack("!I", ssrc) + head[12:] + rtx[at + 2 :]


def _xor(a: bytes, b: bytes) -> bytes:
    """Byte-wise XOR, the shorter padded with zeros (RFC 5109's rule for packets of different lengths)."""
    if len(a) < len(b):
        a, b = b, a
    mixed = int.from_bytes(a, "big") ^ (int.from_bytes(b, "big") << (8 * (len(a) - len(b))))
    return mixed.to_bytes(len(a), "big")


@dataclass(frozen=True)
class FecPacket:
    """A parsed ULPFEC payload (level 0 only, as libwebrtc sends): what its XOR covers and the XORs."""

    base: int  # SN base: the first protected sequence number
    mask: int  # bit (width-1-i) set: base + i is protected
    width: int  # 16 or 48
    bits: bytes  # P, X, CC (byte 0, low 6 bits) and M, PT (byte 1) recovery
    timestamp: bytes  # TS recovery
    length: int  # length recovery: the XOR of the protected packets' lengths after the fixed header
    payload: bytes  # the XOR of the protected packets' bytes after the fixed header

    @property
    def protected(self) -> list[int]:
        return [(self.base + i) & 0xFFFF for i in range(self.width) if self.mask >> (self.width - 1 - i) & 1]

    @classmethod
    def parse(cls, body: bytes) -> FecPacket | None:
        """The FEC packet in `body` (a RED block's data); None if it is malformed or not one we read."""
        if len(body) < FEC_HEADER + 4 or body[0] & 0x80:  # E set: an extension we do not know
            return None
        width = 48 if body[0] & 0x40 else 16
        level = FEC_HEADER + 2 + width // 8
        if len(body) < level:
            return None
        protection = int.from_bytes(body[FEC_HEADER : FEC_HEADER + 2], "big")
        mask = int.from_bytes(body[FEC_HEADER + 2 : level], "big")
        payload = body[level : level + protection]
        if len(payload) < protection or not mask:
            return None
        length = int.from_bytes(body[8:10], "big")
        return cls(seq_of(body), mask, width, body[:2], body[4:8], length, payload)


def fec_encode(packets: list[bytes]) -> bytes:
    """One ULPFEC payload (RFC 5109, level 0) protecting `packets` (at most 48, consecutive or not, in order
    of sequence number, none more than 47 after the first)."""
    base = seq_of(packets[0])
    offsets = [(seq_of(p) - base) & 0xFFFF for p in packets]
    width = 16 if offsets[-1] < 16 else 48
    mask = sum(1 << (width - 1 - o) for o in offsets)
    bits, stamp, length, payload = b"\x00\x00", b"\x00" * 4, 0, b""
    for packet in packets:
        bits = _xor(bits, packet[:2])
        stamp = _xor(stamp, packet[4:8])
        length ^= len(packet) - HEADER
        payload = _xor(payload, packet[HEADER:])
    first = (bits[0] & 0x3F) | (0x40 if width == 48 else 0)  # E=0, L, then P, X, CC recovery
    head = bytes([first, bits[1]]) + struct.pack("!H", base) + stamp + struct.pack("!H", length)
    level = struct.pack("!H", len(payload)) + mask.to_bytes(width // 8, "big")
    return head + level + payload


def fec_recover(fec: FecPacket, ssrc: int, others: Iterable[bytes], missing: int) -> bytes | None:
    """Rebuild packet `missing` of `fec`'s protected ones from all the `others`; None if the result cannot
    be a packet (a FEC packet that does not belong with these)."""
    bits, stamp, length, payload = fec.bits, fec.timestamp, fec.length, fec.payload
    for packet in others:
        bits = _xor(bits, packet[:2])
        stamp = _xor(stamp, packet[4:8])
        length ^= len(packet) - HEADER
        payload = _xor(payload, packet[HEADER:])
    if length > len(payload):
        return None
    head = bytes([0x80 | (bits[0] & 0x3F), bits[1]]) + struct.pack("!H", missing) + stamp + struct.pack("!I", ssrc)
    return head + payload[:length]


def fec_groups(count: int, groups: int) -> list[list[int]]:
    """Which of a frame's `count` packets each of `groups` FEC packets covers: interleaved (i % groups), so
    that a burst of up to `groups` losses costs each at most one; in spans of MAX_MASK packets."""
    out: list[list[int]] = []
    for start in range(0, count, MAX_MASK):
        span = min(MAX_MASK, count - start)
        k = min(groups, span)
        out += [[start + i for i in range(j, span, k)] for j in range(k)]
    return out


# How many FEC packets a frame gets: a share of its packets that grows with the loss the receiver reports
# (RATE_PER_LOSS times it, at most MAX_RATE), at least two where the frame has two packets or more, so that
# a burst of two costs each FEC packet one; none under MIN_LOSS, where NACK repairs the rare loss for less,
# and none over CONGESTED, where the loss is a narrow link's queue overflowing (congestion.py): FEC would
# only add to what it drops. Between 10 and 20% it stays on: a second of 5% bursty loss reports that much
# now and then, and a queue overflowing is told apart by congestion.py (`link_bound`), which turns FEC off.
#
# A frame that goes out late (LATE seconds or more after its timestamp says, next to the frame before: the
# picture it comes from was held up by a repair on its way in) gets one FEC packet per media packet, each a
# copy of one: its viewer has been waiting since the frame before, and a NACK repair on top (a round trip
# more) made most of the freezes left at 5% loss each way (two repairs in series, 200-250 ms).
MIN_LOSS = 0.01
CONGESTED = 0.20
RATE_PER_LOSS = 8.0
MAX_RATE = 0.5
DECAY = 0.7  # of the loss the protection is sized for, kept at each report that shows less
LATE = 0.05  # s
# TAIL: a burst at a frame's end can take its last media packets and the FEC packets sent right after them (traced
# at 5% bursty loss on the way in: a frame's marked packet and both its FEC packets, rebuilt only by a retry
# 237 ms later). So each FEC packet of a frame also covers one of the last frame's last media packets, a frame
# (33 ms) later, past the burst: FEC packet j covers the last frame's j-th packet from the end, at no extra
# packet. What it rebuilds of the frame before, it rebuilds when the next frame's FEC comes.


def _cover_tail(covers: list[list[bytes]], previous: list[bytes]) -> None:
    """Add the last frame's last media packets to a frame's FEC groups (`covers`, in the order they go out),
    one each, the last packet to the first group (TAIL), where the group's mask still reaches it."""
    for group, packet in zip(covers, reversed(previous), strict=False):
        if (seq_of(group[-1]) - seq_of(packet)) & 0xFFFF < MAX_MASK:
            group.insert(0, packet)


def protection(packets: int, loss: float, late: bool = False) -> int:
    """FEC packets for a frame of `packets` media packets at a reported `loss` (0..1); `late`: a frame the
    viewer already waits for."""
    if packets == 0 or not MIN_LOSS <= loss <= CONGESTED:
        return 0
    if late:
        return packets
    share = min(MAX_RATE, RATE_PER_LOSS * loss)
    return min(packets, max(2 if packets > 1 else 1, math.ceil(packets * share)))


# ---------------------------------------------------------------------------------------------------------
# The two ends, on bytes.


@dataclass(frozen=True)
class FecFormats:
    """The payload types both peers gave RED, ULPFEC and RTX for RED (None: no RTX for it)."""

    red: int
    ulpfec: int
    rtx: int | None = None

    @classmethod
    def from_sdp(cls, sdp: str) -> FecFormats | None:
        """Those a description's first video section maps; None unless it has both RED and ULPFEC."""
        found = fec_payload_types(sdp)
        return None if found is None else cls(*found)

    def codecs(self) -> list[RTCRtpCodecParameters]:
        """aiortc's codec parameters for them (for an answer that lists them)."""
        codecs = [
            RTCRtpCodecParameters(mimeType="video/red", clockRate=90000, payloadType=self.red),
            RTCRtpCodecParameters(mimeType="video/ulpfec", clockRate=90000, payloadType=self.ulpfec),
        ]
        if self.rtx is not None:
            codecs.append(
                RTCRtpCodecParameters(
                    mimeType="video/rtx", clockRate=90000, payloadType=self.rtx, parameters={"apt": self.red}
                )
            )
        return codecs


@dataclass
class FecSender:
    """Wraps one stream's outgoing packets in RED, renumbered so that FEC packets fit between frames, sends
    FEC after each frame, and keeps what it sent for RTX (aiortc's history holds its own numbers)."""

    formats: FecFormats
    ssrc: int
    rtx_ssrc: int
    loss: float = 0.0  # the receiver's last reported fraction lost, 0..1
    enabled: bool = True
    fec_sent: int = 0
    media_sent: int = 0
    late_frames: int = 0  # frames sent with a FEC copy of each packet (LATE)
    seq: int | None = None  # the next sequence number
    rtx_seq: int = 0
    history: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    frame: list[bytes] = field(default_factory=list)  # this frame's media packets so far (as protected)
    # Whether the bitrate is held at what a narrow link carries (congestion.py saw its queue overflow): FEC
    # on top of the media would only fill the queue more. A cap for random loss leaves FEC on.
    capped: Callable[[], bool] = lambda: False
    clock: Callable[[], float] = time.monotonic
    started: tuple[int, float] | None = None  # the last frame's RTP timestamp and when its first packet went
    late: bool = False  # whether this frame goes out LATE
    previous: list[bytes] = field(default_factory=list)  # the last frame's media packets (TAIL)

    def send(self, data: bytes) -> list[bytes]:
        """What goes out for `data` (an RTP or RTCP packet aiortc sends): itself unless it is this stream's
        media; then its RED packet, and after a frame's last packet its FEC packets."""
        if len(data) < HEADER or is_rtcp(data) or ssrc_of(data) != self.ssrc or not self.enabled:
            return [data]
        if self.seq is None:
            self.seq = seq_of(data)  # carry on from the sender's own (random) first number
        if self.frame and self.frame[-1][4:8] != data[4:8]:
            self.frame.clear()  # a frame whose marked packet never came
        if not self.frame:
            self._start(int.from_bytes(data[4:8], "big"))
        media = with_header(data, seq=self._next())
        red = red_wrap(media, self.formats.red)
        self._keep(seq_of(media), red)
        self.frame.append(media)
        self.media_sent += 1
        out = [red]
        if data[1] & 0x80:  # the frame's last packet
            out += self._protect(self.frame)
            self.frame = []
        return out

    def _protect(self, frame: list[bytes]) -> list[bytes]:
        out = []
        head = frame[-1][: header_length(frame[-1])]  # as libwebrtc: the last media packet's header
        count = 0 if self.capped() else protection(len(frame), self.loss, self.late)
        groups = fec_groups(len(frame), count)
        if count and self.late:
            self.late_frames += 1
        # The group after the last media packet's goes first: a burst that takes that packet and the FEC
        # packet after it then costs two groups one packet each.
        first = len(frame) % len(groups) if groups and len(frame) <= MAX_MASK else 0
        covers = [[frame[i] for i in group] for group in groups[first:] + groups[:first]]
        if not self.late:
            _cover_tail(covers, self.previous)
        for packets in covers:
            body = bytes([self.formats.ulpfec]) + fec_encode(packets)
            out.append(with_header(head, self.formats.red, self._next(), marker=0) + body)
        self.fec_sent += len(out)
        self.previous = list(frame)
        return out

    def _start(self, timestamp: int) -> None:
        """A frame's first packet goes out: whether it is LATE next to the frame before."""
        now = self.clock()
        if self.started is not None:
            last, then = self.started
            elapsed = ((timestamp - last) & 0xFFFFFFFF) / VIDEO_CLOCK_RATE
            self.late = elapsed < 10.0 and now - then - elapsed >= LATE  # (a timestamp going back: not late)
        self.started = (timestamp, now)

    def report(self, fraction_lost: float) -> None:
        """A receiver report's loss (0..1): followed up at once, down by at most DECAY a report, since one
        report covers a second or so of packets and a lucky one would leave the next bursts unprotected."""
        self.loss = max(fraction_lost, DECAY * self.loss)

    def retransmission(self, seq: int) -> bytes | None:
        """The RTX packet for a NACKed `seq` (its RED packet; as is without RTX), None if not kept."""
        red = self.history.get(seq)
        if red is None or self.formats.rtx is None:
            return red
        self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
        return rtx_wrap(red, self.formats.rtx, self.rtx_seq, self.rtx_ssrc)

    def _next(self) -> int:
        assert self.seq is not None
        seq, self.seq = self.seq, (self.seq + 1) & 0xFFFF
        return seq

    def _keep(self, seq: int, red: bytes) -> None:
        self.history[seq] = red
        while len(self.history) > HISTORY:
            self.history.popitem(last=False)


def _vp8_picture(payload: bytes) -> tuple[bool, int | None, int]:
    """(whether it starts a frame, its picture id or None, the id's modulus) from a VP8 payload descriptor."""
    if not payload:
        return False, None, 0
    starts = bool(payload[0] & 0x10) and payload[0] & 0x07 == 0
    if not payload[0] & 0x80 or len(payload) < 3 or not payload[1] & 0x80:
        return starts, None, 0
    if payload[2] & 0x80:
        if len(payload) < 4:
            return starts, None, 0
        return starts, ((payload[2] & 0x7F) << 8) | payload[3], 1 << 15
    return starts, payload[2] & 0x7F, 1 << 7


# What the receiver hands aiortc, and how aiortc should take it: RECEIVED (a packet that came, FEC packets'
# fillers too), RESENT (unwrapped from RTX: not counted as received, as aiortc counts RTX apart; fed to the
# bandwidth estimate as aiortc fed its RTX packets), REBUILT (from FEC, or a filler for a lost FEC packet:
# neither counted nor fed to the estimate, since its send time is the lost packet's).
RECEIVED, RESENT, REBUILT = "received", "resent", "rebuilt"


@dataclass
class FecReceiver:
    """One stream's incoming RED, ULPFEC and RTX-for-RED packets turned back into media packets.

    `receive` returns what to hand aiortc, each with how it came (RECEIVED, RESENT, REBUILT). FEC packets
    are handed on as empty packets of the media's payload type, so that their sequence numbers close the
    gaps they would leave (the jitter buffer drops them); a lost FEC packet's number is filled in likewise
    once VP8's picture ids show that nothing else was sent between two frames."""

    formats: FecFormats
    media_pt: int | None = None  # learnt from the RED blocks
    ssrc: int | None = None
    recovered: int = 0
    fec_received: int = 0
    filled: int = 0
    late: int = 0  # rebuilt packets that came after all (reordered, or resent): what a rebuild won
    mismatched: int = 0  # of those, ones that differ from the rebuild (a bug, or a sender that is not ours)
    rebuilt: OrderedDict[int, bytes] = field(default_factory=OrderedDict)  # seq -> recent rebuild
    media: OrderedDict[int, bytes] = field(default_factory=OrderedDict)  # seq -> recent media packet
    seen: OrderedDict[int, None] = field(default_factory=OrderedDict)  # every number handed on
    fecs: list[tuple[FecPacket, bytes]] = field(default_factory=list)  # with the header they came under
    ends: OrderedDict[int, tuple[int, bytes]] = field(default_factory=OrderedDict)  # picture -> (last seq, ts)
    starts: OrderedDict[int, int] = field(default_factory=OrderedDict)  # picture -> first seq

    def receive(self, data: bytes) -> list[tuple[bytes, str]]:
        if len(data) < HEADER or is_rtcp(data):
            return [(data, RECEIVED)]
        pt = data[1] & 0x7F
        if pt == self.formats.red:
            unwrapped = red_unwrap(data)
            if unwrapped is None:
                return []
            block_pt, packet = unwrapped
            self.ssrc = ssrc_of(data)
            if block_pt == self.formats.ulpfec:
                return self._fec(packet)
            self.media_pt = block_pt
            return self._media(packet, RECEIVED)
        if pt == self.formats.rtx and self.formats.rtx is not None:
            if self.ssrc is None:
                return []
            original = rtx_unwrap(data, self.formats.red, self.ssrc)
            unwrapped = None if original is None else red_unwrap(original)
            if unwrapped is None or unwrapped[0] == self.formats.ulpfec:
                return []
            return self._media(unwrapped[1], RESENT)
        return [(data, RECEIVED)]

    def _media(self, packet: bytes, kind: str) -> list[tuple[bytes, str]]:
        if (rebuild := self.rebuilt.pop(seq_of(packet), None)) is not None:
            self.late += 1
            self.mismatched += rebuild != packet
        out = [(packet, kind)]
        self._store(packet)
        out += self._recover()
        for media, _ in list(out):
            out += self._fill_between_frames(media)
        return out

    def _fec(self, packet: bytes) -> list[tuple[bytes, str]]:
        at = header_length(packet)
        fec = FecPacket.parse(packet[at:])
        self.fec_received += 1
        out = [(self._filler(seq_of(packet), packet[4:8]), RECEIVED)]
        if fec is not None:
            self.fecs.append((fec, packet))
            del self.fecs[:-32]  # a few frames' worth: older ones come too late to help
            out += self._recover()
            for media, _ in out[1:]:
                out += self._fill_between_frames(media)
        return out

    def _filler(self, seq: int, timestamp: bytes) -> bytes:
        """An empty packet of the media's payload type numbered `seq`: what the jitter buffer skips."""
        self._saw(seq)
        pt = self.media_pt if self.media_pt is not None else self.formats.red
        return bytes([0x80, pt]) + struct.pack("!H", seq) + timestamp + struct.pack("!I", self.ssrc or 0)

    def _saw(self, seq: int) -> None:
        self.seen[seq] = None
        while len(self.seen) > 2 * HISTORY:
            self.seen.popitem(last=False)

    def _store(self, packet: bytes) -> None:
        seq = seq_of(packet)
        self.media[seq] = packet
        self._saw(seq)
        while len(self.media) > HISTORY:
            self.media.popitem(last=False)
        at = header_length(packet)
        starts, picture, _ = _vp8_picture(packet[at:])
        if picture is None:
            return
        if packet[1] & 0x80:
            self.ends[picture] = (seq, packet[4:8])
        if starts:
            self.starts[picture] = seq
        for kept in (self.ends, self.starts):
            while len(kept) > 64:
                kept.popitem(last=False)

    def _recover(self) -> list[tuple[bytes, str]]:
        """Media packets rebuilt from the FEC packets kept, each counted in `recovered`."""
        out: list[tuple[bytes, str]] = []
        progress = True
        while progress:
            progress = False
            for entry in list(self.fecs):
                fec, packet = entry
                protected = fec.protected
                missing = [s for s in protected if s not in self.media]
                if len(missing) > 1:
                    continue
                self.fecs.remove(entry)
                if not missing:
                    continue
                others = [self.media[s] for s in protected if s != missing[0]]
                rebuilt = fec_recover(fec, ssrc_of(packet), others, missing[0])
                if rebuilt is None:
                    continue
                self.recovered += 1
                self.rebuilt[missing[0]] = rebuilt
                while len(self.rebuilt) > 64:
                    self.rebuilt.popitem(last=False)
                self._store(rebuilt)
                out.append((rebuilt, REBUILT))
                progress = True
        return out

    def _fill_between_frames(self, packet: bytes) -> list[tuple[bytes, str]]:
        """Fillers for the numbers between a frame's last packet and the next picture's first that never
        came: nothing but FEC (or padding) is sent there, so they are not worth a NACK or a wait."""
        at = header_length(packet)
        _, picture, modulus = _vp8_picture(packet[at:])
        if picture is None:
            return []
        out = []
        for before in ((picture - 1) % modulus, picture):
            end, start = self.ends.get(before), self.starts.get((before + 1) % modulus)
            if end is None or start is None:
                continue
            last, timestamp = end
            span = (start - last) & 0xFFFF
            if not 1 < span <= MAX_MASK:
                continue
            for offset in range(1, span):
                seq = (last + offset) & 0xFFFF
                if seq not in self.seen:
                    self.filled += 1
                    out.append((self._filler(seq, timestamp), REBUILT))
        return out


# ---------------------------------------------------------------------------------------------------------
# Negotiation and fitting to aiortc's connections.


@dataclass
class Fec:
    """One video transceiver's FEC: what it sent and what it recovered (the session's counters)."""

    sender: FecSender | None
    receiver: FecReceiver | None

    def stats(self) -> dict[str, int]:
        return {
            "fec_recovered": self.receiver.recovered if self.receiver else 0,
            "fec_recovered_late": self.receiver.late if self.receiver else 0,
            "fec_mismatched": self.receiver.mismatched if self.receiver else 0,
            "fec_received": self.receiver.fec_received if self.receiver else 0,
            "fec_sent": self.sender.fec_sent if self.sender else 0,
            "media_sent": self.sender.media_sent if self.sender else 0,
            "fec_late_frames": self.sender.late_frames if self.sender else 0,
        }


def totals(fecs: Iterable[Fec]) -> dict[str, int]:
    """The counters of all of a connection's `fecs`, summed (zeros without FEC)."""
    out = Fec(None, None).stats()
    for fec in fecs:
        for name, value in fec.stats().items():
            out[name] += value
    return out


def accept(pc: RTCPeerConnection, formats: FecFormats | None) -> FecFormats | None:
    """As the answerer (between setRemoteDescription and createAnswer): list the offer's `formats` in the
    answer's video where VP8 leads the codecs (aiortc knows neither RED nor ULPFEC, so it drops them from
    what it negotiates); returns them, or None where nothing was added."""
    added = None
    for transceiver in pc.getTransceivers():
        codecs = aiortc_hooks.codecs(transceiver)
        if transceiver.kind != "video" or formats is None or not codecs or codecs[0].mimeType.lower() != "video/vp8":
            continue
        taken = {c.payloadType for c in codecs}
        if {formats.red, formats.ulpfec, formats.rtx} & taken:
            continue
        aiortc_hooks.set_codecs(transceiver, codecs + formats.codecs())
        added = formats
    return added


def protect(pc: RTCPeerConnection, formats: FecFormats) -> list[Fec]:
    """Fit each video transceiver of `pc` with FEC both ways (call once both descriptions are set, after
    `encoders.fit_senders` on the server, before media flows): its sender's packets go out in RED with FEC
    after each frame and NACKs are answered from its RED history; its receiver's come unwrapped and
    repaired. Returns the counters."""
    fitted = []
    for transceiver in pc.getTransceivers():
        if transceiver.kind != "video":
            continue
        receiver = transceiver.receiver
        inbound = FecReceiver(formats)
        _receive_through(inbound, receiver)
        outbound = None
        sender = transceiver.sender
        if sender.track is not None and transceiver.direction in ("sendrecv", "sendonly"):
            outbound = _send_through(formats, sender)
        fitted.append(Fec(outbound, inbound))
    return fitted


def _receive_through(fec: FecReceiver, receiver: object) -> None:
    transport = receiver.transport  # type: ignore[attr-defined]
    handle = aiortc_hooks.rtp_handler(transport)

    async def receive(data: bytes, arrival_time_ms: int) -> None:
        try:
            packets = fec.receive(data)
        except Exception:  # this runs in aiortc's receive loop: a bug here must not end the connection
            log.exception("FEC receive failed; the packet goes on as it came")
            packets = [(data, RECEIVED)]
        for packet, kind in packets:
            if kind == RECEIVED:
                await handle(packet, arrival_time_ms)
            else:  # a repair: not counted as received in the receiver reports (the loss before repair)
                with aiortc_hooks.uncounted(receiver, ssrc_of(packet), estimated=kind == RESENT):  # type: ignore[arg-type]
                    await handle(packet, arrival_time_ms)

    aiortc_hooks.set_rtp_handler(transport, receive)


def _send_through(formats: FecFormats, sender: RTCRtpSender) -> FecSender:
    ssrc, rtx_ssrc = aiortc_hooks.sender_ssrcs(sender)

    def capped() -> bool:
        encoder = aiortc_hooks.encoder(sender)
        return isinstance(encoder, BitrateCeiling) and encoder.link_bound

    fec = FecSender(formats, ssrc, rtx_ssrc, capped=capped)
    transport = sender.transport
    send = aiortc_hooks.rtp_sender(transport)

    async def send_through(data: bytes) -> None:
        for packet in fec.send(data):
            await send(packet)

    async def retransmit(seq: int) -> None:
        packet = fec.retransmission(seq)
        if packet is not None:
            await send(packet)

    aiortc_hooks.set_rtp_sender(transport, send_through)
    resender = aiortc_hooks.retransmitter(sender)
    if isinstance(resender, Resender):  # the server's copies (resend.py), now of the RED packets
        resender.retransmit, resender.holds = retransmit, fec.history.__contains__
    else:
        aiortc_hooks.set_retransmitter(sender, retransmit)
    _follow_reports(fec, sender)
    return fec


def _follow_reports(fec: FecSender, sender: RTCRtpSender) -> None:
    """Size the protection from each receiver report's fraction lost for this stream."""
    handle = aiortc_hooks.rtcp_handler(sender)

    async def on_rtcp(packet: object) -> None:
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == fec.ssrc:
                    fec.report(report.fraction_lost / 256)  # RFC 3550: an 8-bit fixed-point fraction
        await handle(packet)

    aiortc_hooks.set_rtcp_handler(sender, on_rtcp)
