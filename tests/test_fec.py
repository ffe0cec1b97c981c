"""Forward error correction (server/rtc/fec.py): RED and ULPFEC packets as RFC 2198 and RFC 5109 lay them
out, a lost packet rebuilt from the XOR, and a sender and receiver that get every media packet through
bursts of two losses without a retransmission."""

from __future__ import annotations

import random
import struct

import pytest
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket

from server.rtc import fec
from server.rtc.fec import REBUILT, RECEIVED, RESENT, FecFormats, FecPacket, FecReceiver, FecSender
from server.rtc.nacks import RoundTrip
from server.rtc.recovery import RecoveringJitterBuffer
from server.rtc.sdp import fec_payload_types, offer_fec

pytestmark = pytest.mark.unit

VP8, RED, ULPFEC, RTX = 97, 120, 121, 122
SSRC, RTX_SSRC = 0x11223344, 0x55667788
FORMATS = FecFormats(RED, ULPFEC, RTX)


def rtp(seq: int, ts: int, payload: bytes, marker: bool = False, extension: bool = False, csrcs: int = 0) -> bytes:
    """An RTP packet's bytes: VP8's payload type, optionally a CSRC list and a one-byte header extension."""
    first = 0x80 | (0x10 if extension else 0) | csrcs
    head = bytes([first, (0x80 if marker else 0) | VP8]) + struct.pack("!HII", seq & 0xFFFF, ts, SSRC)
    head += b"".join(struct.pack("!I", 1000 + i) for i in range(csrcs))
    if extension:  # RFC 8285 one-byte form: abs-send-time (id 3, 3 bytes), padded to a word
        head += b"\xbe\xde\x00\x01" + bytes([0x32]) + struct.pack("!I", ts)[1:]
    return head + payload


def vp8(picture: int, first: bool, size: int, rng: random.Random) -> bytes:
    """A VP8 payload: the descriptor (X, S on a frame's first packet, a 15-bit picture id) and `size` bytes."""
    return bytes([0x90 if first else 0x80, 0x80, 0x80 | picture >> 8, picture & 0xFF]) + rng.randbytes(size)


def frames(count: int, rng: random.Random, smallest: int = 1) -> list[bytes]:
    """`count` frames of `smallest`-9 packets as aiortc's sender makes them (consecutive numbers, the last
    marked), with a header extension."""
    packets, seq = [], 40_000
    for picture in range(count):
        n = rng.randint(smallest, 9)
        for i in range(n):
            payload = vp8(picture, i == 0, rng.randint(50, 1200), rng)
            packets.append(rtp(seq, 3000 * picture, payload, marker=i == n - 1, extension=True))
            seq += 1
    return packets


def test_red_wraps_a_packet_in_its_primary_block_and_unwraps_it_again() -> None:
    packet = rtp(7, 90, b"\x10payload", marker=True, extension=True, csrcs=2)
    red = fec.red_wrap(packet, RED)
    at = fec.header_length(packet)
    assert red[1] == 0x80 | RED and red[at] == VP8 and red[at + 1 :] == packet[at:]  # F=0, the block's type
    assert fec.red_unwrap(red) == (VP8, packet)


def test_red_unwrap_skips_redundant_blocks() -> None:
    packet = rtp(7, 90, b"primary")
    at = fec.header_length(packet)
    # one redundant block of 3 bytes (F=1, PT, 14-bit offset, 10-bit length), then the primary's header
    red = fec.with_header(packet[:at], RED) + bytes([0x80 | VP8, 0, 0, 3, VP8]) + b"old" + b"primary"
    assert fec.red_unwrap(red) == (VP8, packet)


def test_rtx_carries_the_original_number_and_gives_back_the_packet() -> None:
    red = fec.red_wrap(rtp(65_535, 90, b"\x10data", extension=True), RED)
    wrapped = fec.rtx_wrap(red, RTX, 3, RTX_SSRC)
    assert wrapped[1] & 0x7F == RTX and fec.seq_of(wrapped) == 3 and fec.ssrc_of(wrapped) == RTX_SSRC
    assert fec.rtx_unwrap(wrapped, RED, SSRC) == red


@pytest.mark.parametrize("extension", [False, True])
def test_any_one_packet_of_a_group_is_rebuilt_from_the_others_and_the_fec_packet(extension: bool) -> None:
    rng = random.Random(1)
    group = [
        rtp(100 + 2 * i, 9000 + i, rng.randbytes(rng.randint(0, 1200)), marker=i == 4, extension=extension)
        for i in range(5)
    ]
    parsed = FecPacket.parse(fec.fec_encode(group))
    assert parsed is not None and parsed.protected == [100, 102, 104, 106, 108] and parsed.width == 16
    for lost in range(5):
        others = [p for i, p in enumerate(group) if i != lost]
        assert fec.fec_recover(parsed, SSRC, others, 100 + 2 * lost) == group[lost]


def test_a_long_mask_covers_48_packets_across_the_wrap() -> None:
    rng = random.Random(2)
    group = [rtp(65_530 + i, 1, rng.randbytes(100)) for i in range(0, 48, 3)]
    parsed = FecPacket.parse(fec.fec_encode(group))
    assert parsed is not None and parsed.width == 48
    assert parsed.protected == [(65_530 + i) & 0xFFFF for i in range(0, 48, 3)]
    assert fec.fec_recover(parsed, SSRC, group[1:], 65_530) == group[0]


def test_groups_interleave_so_a_burst_of_k_costs_each_one_packet() -> None:
    assert fec.fec_groups(7, 2) == [[0, 2, 4, 6], [1, 3, 5]]
    assert fec.fec_groups(1, 2) == [[0]]
    groups = fec.fec_groups(100, 3)
    assert sorted(i for g in groups for i in g) == list(range(100))
    assert all(max(g) - min(g) < fec.MAX_MASK for g in groups)


def test_protection_grows_with_the_reported_loss_and_is_none_on_a_clean_link() -> None:
    assert fec.protection(8, 0.0) == 0 and fec.protection(8, 0.005) == 0
    assert fec.protection(8, 0.02) == 2  # at least two: a burst of two costs each one packet
    assert fec.protection(1, 0.05) == 1
    assert fec.protection(10, 0.05) == 4
    assert fec.protection(10, 0.1) == 5  # at most half
    assert fec.protection(10, 0.15) == 5  # a second of bursty loss reports this much now and then
    assert fec.protection(10, 0.25) == 0  # a queue overflowing: FEC would add to it


def test_the_protection_follows_a_higher_loss_at_once_and_a_lower_one_slowly() -> None:
    sender = FecSender(FORMATS, SSRC, RTX_SSRC)
    sender.report(0.05)
    assert sender.loss == 0.05
    sender.report(0.01)
    assert sender.loss == pytest.approx(0.035)
    for _ in range(5):
        sender.report(0.0)
    assert fec.protection(10, sender.loss) == 0  # a clean link: none within a few reports


def test_no_fec_while_the_bitrate_is_capped_for_a_narrow_link() -> None:
    media = frames(3, random.Random(6), smallest=2)
    capped = FecSender(FORMATS, SSRC, RTX_SSRC, loss=0.05, capped=lambda: True)
    assert len(_send_all(capped, media)) == len(media) and capped.fec_sent == 0


def test_a_frame_that_goes_out_late_gets_a_copy_of_each_packet_and_comes_through_losing_them_all() -> None:
    """After a repair held the picture up on its way in, the frame that goes out late (its viewer is waiting
    already) loses nothing to a burst: every one of its packets is rebuilt without a retransmission."""
    media = frames(4, random.Random(8), smallest=4)
    starts = [i for i, p in enumerate(media) if i == 0 or media[i - 1][1] & 0x80]
    pictures = [media[start:end] for start, end in zip(starts, [*starts[1:], len(media)], strict=True)]
    now = [0.0]
    sender = FecSender(FORMATS, SSRC, RTX_SSRC, loss=0.05, clock=lambda: now[0])
    wire = []
    for number, picture in enumerate(pictures):
        now[0] = number / 30 + (0.12 if number == 2 else 0.0)  # the third frame goes out 120 ms late
        wire.append(_send_all(sender, picture))
    added = [len(out) - len(picture) for out, picture in zip(wire, pictures, strict=True)]
    assert added[2] == len(pictures[2]) and sender.late_frames == 1  # one FEC packet per media packet
    assert all(added[i] < len(pictures[i]) for i in (0, 1, 3))  # on time: the loss's share
    late = {fec.seq_of(p) for p in wire[2][: len(pictures[2])]}  # all of the late frame's media packets lost
    receiver = FecReceiver(FORMATS)
    handed = [out for sent in wire for p in sent if fec.seq_of(p) not in late for out in receiver.receive(p)]
    rebuilt = {fec.seq_of(p): p for p, kind in handed if kind == REBUILT and fec.seq_of(p) in late}
    assert set(rebuilt) == late and receiver.recovered == len(late)
    for red in wire[2][: len(pictures[2])]:
        assert rebuilt[fec.seq_of(red)] == fec.red_unwrap(red)[1]  # type: ignore[index]


def test_a_burst_that_takes_a_frames_tail_and_its_fec_is_rebuilt_from_the_next_frames_fec() -> None:
    """A burst at a frame's end takes its last media packets and every FEC packet sent after them (traced at 5%
    bursty loss: a marked packet and both its FEC packets, then a retry 237 ms later). The next frame's FEC
    packets cover the frame's last packets too, so they come back a frame later, without a retransmission, and
    at no extra packet."""
    media = frames(3, random.Random(5), smallest=4)
    starts = [i for i, p in enumerate(media) if i == 0 or media[i - 1][1] & 0x80]
    pictures = [media[start:end] for start, end in zip(starts, [*starts[1:], len(media)], strict=True)]
    sender = FecSender(FORMATS, SSRC, RTX_SSRC, loss=0.05)
    wire = [_send_all(sender, picture) for picture in pictures]
    for out, picture in zip(wire, pictures, strict=True):
        assert len(out) - len(picture) == fec.protection(len(picture), 0.05)  # FEC packets as many as before
    count = fec.protection(len(pictures[1]), 0.05)
    lost = {fec.seq_of(p) for p in wire[1][-2 * count :]}  # the second frame's last media packets and its FEC
    tail = {fec.seq_of(p) for p in wire[1][len(pictures[1]) - count : len(pictures[1])]}
    assert len(tail) == count >= 2
    receiver = FecReceiver(FORMATS)
    handed = [out for sent in wire for p in sent if fec.seq_of(p) not in lost for out in receiver.receive(p)]
    rebuilt = {fec.seq_of(p): p for p, kind in handed if kind == REBUILT and fec.seq_of(p) in tail}
    assert set(rebuilt) == tail, (sorted(rebuilt), sorted(tail))
    for red in wire[1][len(pictures[1]) - count : len(pictures[1])]:
        assert rebuilt[fec.seq_of(red)] == fec.red_unwrap(red)[1]  # type: ignore[index]


def _send_all(sender: FecSender, packets: list[bytes]) -> list[bytes]:
    return [out for packet in packets for out in sender.send(packet)]


def test_through_bursts_of_two_every_media_packet_comes_without_a_retransmission() -> None:
    rng = random.Random(3)
    media = frames(200, rng, smallest=2)  # a frame of one packet has one FEC packet: a burst can take both
    sender = FecSender(FORMATS, SSRC, RTX_SSRC, loss=0.05)
    wire = _send_all(sender, media)
    assert sender.media_sent == len(media) and sender.fec_sent >= 2 * 200
    assert all(p[1] & 0x7F == RED for p in wire)
    # lose a burst of two every 25 packets on the wire
    lost = {i for start in range(10, len(wire), 25) for i in (start, start + 1)}
    receiver = FecReceiver(FORMATS)
    handed = [out for i, packet in enumerate(wire) if i not in lost for out in receiver.receive(packet)]
    by_seq = {fec.seq_of(p): (p, counted) for p, counted in handed}
    # every number on the wire was handed on: media as sent (with the wire's numbers), the rest as fillers
    assert set(by_seq) == {fec.seq_of(p) for p in wire}
    sent_media = {fec.seq_of(red): fec.red_unwrap(red)[1] for red in wire if red[fec.header_length(red)] == VP8}  # type: ignore[index]
    for seq, packet in sent_media.items():
        assert by_seq[seq][0] == packet
    lost_media = {fec.seq_of(wire[i]) for i in lost} & set(sent_media)
    assert receiver.recovered == len(lost_media) > 0
    assert all(by_seq[seq][1] == REBUILT for seq in lost_media)  # repairs are not counted as received
    assert all(len(p) == 12 and p[1] & 0x7F == VP8 for seq, (p, _) in by_seq.items() if seq not in sent_media)


def test_nothing_is_added_on_a_clean_link_and_rtx_gives_back_a_lost_packet() -> None:
    rng = random.Random(4)
    media = frames(5, rng)
    sender = FecSender(FORMATS, SSRC, RTX_SSRC)
    wire = _send_all(sender, media)
    assert len(wire) == len(media) and sender.fec_sent == 0
    receiver = FecReceiver(FORMATS)
    for packet in wire[:3]:
        receiver.receive(packet)
    resent = sender.retransmission(fec.seq_of(wire[3]))
    assert resent is not None and resent[1] & 0x7F == RTX and fec.ssrc_of(resent) == RTX_SSRC
    assert receiver.receive(resent) == [(fec.red_unwrap(wire[3])[1], RESENT)]  # type: ignore[index]
    assert sender.retransmission(1) is None  # not sent (or a FEC packet): nothing to resend


def test_other_streams_and_rtcp_pass_untouched() -> None:
    sender, receiver = FecSender(FORMATS, SSRC, RTX_SSRC, loss=0.1), FecReceiver(FORMATS)
    other = rtp(1, 1, b"x")[:8] + struct.pack("!I", 99) + b"x"
    rtcp = bytes([0x80, 201, 0, 1]) + struct.pack("!I", SSRC)
    assert sender.send(other) == [other] and sender.send(rtcp) == [rtcp]
    assert receiver.receive(rtp(1, 1, b"\x10plain")) == [(rtp(1, 1, b"\x10plain"), RECEIVED)]


def test_a_lost_fec_packet_is_filled_in_from_the_picture_ids() -> None:
    rng = random.Random(5)
    sender = FecSender(FORMATS, SSRC, RTX_SSRC, loss=0.05)
    wire = _send_all(sender, frames(3, rng))
    fec_at = [i for i, p in enumerate(wire) if p[fec.header_length(p)] == ULPFEC]
    receiver = FecReceiver(FORMATS)
    dropped = set(fec_at[:2])  # the first frame's FEC packets
    handed = [out for i, p in enumerate(wire) if i not in dropped for out in receiver.receive(p)]
    seqs = {fec.seq_of(p) for p, _ in handed}
    assert {fec.seq_of(wire[i]) for i in dropped} <= seqs and receiver.filled == len(dropped)


def _packet(seq: int, ts: int, payload: bytes, marker: bool = False) -> RtpPacket:
    packet = RtpPacket(payload_type=VP8, sequence_number=seq, timestamp=ts, marker=int(marker))
    packet.payload = payload
    packet._data = payload[1:]  # type: ignore[attr-defined]
    return packet


def test_the_jitter_buffer_passes_over_fillers_between_frames() -> None:
    buffer = RecoveringJitterBuffer(RoundTrip(), vp8_types=frozenset({VP8}))
    out: list[JitterFrame] = []
    sequence = [
        _packet(10, 100, b"\x10a"),
        _packet(11, 100, b"\x00b", marker=True),
        _packet(12, 100, b""),  # FEC
        _packet(13, 100, b""),
        _packet(15, 200, b"\x10c", marker=True),  # 14 (FEC) not yet here
        _packet(14, 100, b""),
        _packet(16, 200, b""),
        _packet(17, 300, b"\x10d"),
        _packet(18, 300, b"\x00e", marker=True),
    ]
    for packet in sequence:
        _, frame = buffer.add(packet)
        if frame is not None:
            out.append(frame)
            out += buffer.drain()
    assert [(f.timestamp, f.data) for f in out] == [(100, b"ab"), (200, b"c"), (300, b"de")]
    assert buffer.skips == 0


def test_sdp_offer_gains_red_ulpfec_and_rtx_for_red_on_free_types() -> None:
    offer = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 opus/48000/2\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 97 98\r\na=rtpmap:97 VP8/90000\r\na=rtpmap:98 rtx/90000\r\n"
        "a=fmtp:98 apt=97\r\na=ssrc:1 cname:x\r\n"
    )
    assert fec_payload_types(offer) is None
    added = offer_fec(offer)
    assert fec_payload_types(added) == (99, 100, 101)
    assert "m=video 9 UDP/TLS/RTP/SAVPF 97 98 99 100 101\r\n" in added and added.endswith("\r\n")
    assert added.index("a=fmtp:101 apt=99") < added.index("a=ssrc:1")
    assert offer_fec(added) == added
    assert FecFormats.from_sdp(added) == FecFormats(99, 100, 101)
