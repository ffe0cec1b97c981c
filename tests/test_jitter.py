"""Frames complete on the RTP marker bit, with aiortc's timestamp rule as the fallback."""

from __future__ import annotations

import pytest
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from server.rtc.jitter import MarkerJitterBuffer

pytestmark = pytest.mark.unit


def _packet(sequence: int, timestamp: int, marker: bool = False) -> RtpPacket:
    packet = RtpPacket(payload_type=96, sequence_number=sequence % 65536, timestamp=timestamp, marker=marker)
    packet._data = bytes([sequence % 256])  # type: ignore[attr-defined]  # what the receiver depayloads into
    return packet


def _frames(buffer: JitterBuffer, packets: list[RtpPacket]) -> list[tuple[int, int, bytes]]:
    """(index of the packet whose arrival completed it, timestamp, data) of each frame out."""
    out = []
    for i, packet in enumerate(packets):
        _, frame = buffer.add(packet)
        if frame is not None:
            out.append((i, frame.timestamp, frame.data))
    return out


def test_a_frame_completes_on_its_marked_last_packet() -> None:
    packets = [_packet(65534 + i, 3000 * (i // 3), marker=i % 3 == 2) for i in range(9)]  # wraps the sequence
    stock = _frames(JitterBuffer(512, is_video=True), packets)
    marked = _frames(MarkerJitterBuffer(), packets)
    assert [i for i, _, _ in stock] == [3, 6]  # aiortc: when the next frame starts
    assert [i for i, _, _ in marked] == [2, 5, 8]  # at once
    assert [(t, d) for _, t, d in marked[:2]] == [(t, d) for _, t, d in stock]
    assert marked[0][2] == bytes([254, 255, 0])


def test_a_gap_waits_for_the_missing_packet() -> None:
    buffer = MarkerJitterBuffer()
    first, second, last = _packet(10, 0), _packet(11, 0), _packet(12, 0, marker=True)
    assert _frames(buffer, [first, last]) == []
    # A retransmission fills the gap: the marked packet is already here, so the frame is complete.
    assert _frames(buffer, [second]) == [(0, 0, bytes([10, 11, 12]))]
    assert _frames(buffer, [_packet(13, 3000, marker=True)]) == [(0, 3000, bytes([13]))]


def test_a_lost_marker_falls_back_to_the_timestamp_rule() -> None:
    packets = [_packet(1, 0), _packet(2, 0), _packet(3, 3000), _packet(4, 3000, marker=True)]
    assert _frames(MarkerJitterBuffer(), packets) == [(2, 0, bytes([1, 2])), (3, 3000, bytes([3, 4]))]
