"""Video frames handed to the decoder as soon as their last packet arrives (the RTP marker bit).

aiortc's `JitterBuffer` completes a video frame only when a packet of the *next* frame arrives (a new RTP
timestamp), so every frame waits one frame interval (33 ms at 30 fps) before it is decoded. Senders set
the marker bit on a frame's last packet (RFC 7741 for VP8, RFC 6184 for H.264): a frame whose packets
run without a gap from the buffer's oldest to a marked one is complete. The timestamp rule stays as the
fallback for a lost marker. `recovery.RecoveringJitterBuffer` builds on it and `recovery.recover_losses`
fits it to a connection's video receivers; the private parts of aiortc this touches are reached through
`aiortc_hooks`.
"""

from __future__ import annotations

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

from . import aiortc_hooks

# aiortc's capacity for video, in packets
CAPACITY = 512


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer that also completes a frame on its marked last packet."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        super().__init__(capacity, is_video=True)

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli, frame = super().add(packet)
        if frame is None:
            frame = self._complete()
        return pli, frame

    def _complete(self) -> JitterFrame | None:
        """The oldest frame, removed from the buffer, if its packets run without a gap from the oldest
        packet to a marked one (a retransmission that fills a gap completes it too)."""
        packets: list[RtpPacket] = []
        for packet in aiortc_hooks.buffered(self):
            if packet is None or (packets and packet.timestamp != packets[0].timestamp):
                return None  # a gap (NACKed packets may still come), or a lost marker: aiortc's rule then
            packets.append(packet)
            if packet.marker:
                self.remove(len(packets))
                data = b"".join(aiortc_hooks.payload(p) for p in packets)
                return JitterFrame(data=data, timestamp=packet.timestamp)
        return None
