"""Every use of aiortc's private API, in one place, for the one aiortc version it was written against.

aiortc offers no public way to choose a sender's encoder, a receiver's jitter buffer, a connection's
certificate or the order of the codecs an answer lists, so `encoders.py`, `jitter.py` and `dtls.py` reach
into it through the functions here. Nothing in site-packages is edited. The hooks:

1. `RTCRtpTransceiver._codecs`: the codecs negotiated from the offer, in the order the answer lists them;
   read and reordered (`codecs`, `set_codecs`: `encoders.prefer_codec`, `encoders.fit_senders`).
2. `RTCRtpSender.__encoder`: the sender's encoder, which aiortc creates on the first frame unless one is
   there (`set_encoder`: `encoders.fit_senders`).
3. `Vp8Encoder.__target_bitrate`, `H264Encoder.__target_bitrate`, `Vp8Encoder._packetize`,
   `H264Encoder._split_bitstream` and `H264Encoder._packetize`: the bitrate aiortc's encoders keep and clamp
   to their own ceiling, and the RTP payloads of each codec (`TARGET_BITRATE`, `vp8_packetize`,
   `h264_packetize`: `encoders.Vp8Encoder`, `encoders.H264Encoder`).
4. `RTCRtpReceiver.__jitter_buffer`: the buffer a video receiver puts each packet into (`set_jitter_buffer`:
   `recovery.recover_losses`).
5. `JitterBuffer._origin`, `JitterBuffer._packets` and `RtpPacket._data` (the depayloaded bytes the receiver
   stores on each packet): what the buffer holds, oldest first (`buffered`, `payload`:
   `jitter.MarkerJitterBuffer`).
6. `RTCPeerConnection.__certificates` and `RTCCertificate._create_ssl_context`: the connection's DTLS
   certificates, read when its transports are made, and the DTLS context each builds (`set_certificates`,
   `CipherCertificate`: `dtls.peer_connection`).
7. `RTCRtpReceiver.__nack_generator` and `NackGenerator.missing`: what a video receiver asks to have
   retransmitted; aiortc calls `add` on every packet and, when it returns True, NACKs the sequence numbers
   in `missing` (`set_nack_generator`: `recovery.recover_losses`).
8. `RTCRtpSender.__rtt`: the round trip a sender measures from the receiver reports it gets (RTCP RR's
   LSR/DLSR), smoothed; None before the first (`round_trip`: `recovery.recover_losses`).
9. `RTCRtpReceiver.__decoder_queue`: the queue of (codec, frame) its decoder thread takes; aiortc puts at
   most one frame in it per packet, and the timestamp it puts is mapped to start at 0 (`decoder_queue`:
   `recovery.recover_losses`, which lets the buffer hand over every frame that is complete).
10. `RTCRtpSender._retransmit`: what a sender does for each sequence number a NACK lists (resends it as RTX
   from its history of 128 packets); replaced per sender, the original kept (`retransmitter`,
   `set_retransmitter`: `resend.resend_copies`).
11. `RTCRtpSender._handle_rtcp_packet`, `RTCRtpSender._ssrc`, `RTCRtpSender.__packet_count`,
   `RTCRtpSender.__octet_count` and `RTCRtpSender.__rtp_history`: the receiver reports a sender gets (their
   report blocks: the highest sequence number received and the packets lost, which aiortc's stats leave out),
   what it has sent, and its newest packet's sequence number (`on_receiver_reports`, `sent`,
   `newest_sequence`: `congestion.follow_losses`), and whether it holds a packet (`holds`:
   `resend.Resender`); `RTCDtlsTransport.__tx_packets` and `__tx_bytes`, what its transport has sent, as its
   stats report them (`transport_sent`: `congestion.follow_losses`).
12. `RTCDtlsTransport._send_rtp` and `RTCDtlsTransport._handle_rtp_data`: the bytes of every RTP packet a
   transport sends (before SRTP) and receives (after SRTP, before aiortc parses and routes it); replaced per
   transport, the originals kept (`rtp_sender`, `set_rtp_sender`, `rtp_handler`, `set_rtp_handler`:
   `fec.protect`, which wraps video in RED with FEC and unwraps and repairs it).
13. `RTCRtpSender._ssrc`, `RTCRtpSender._rtx_ssrc` and `RTCRtpSender._handle_rtcp_packet`: a sender's two
   streams, and what it does with each RTCP packet routed to it; the latter replaced per sender, the original
   kept (`sender_ssrcs`, `rtcp_handler`, `set_rtcp_handler`: `fec.protect`, which sizes its protection from
   the receiver reports).
14. `RTCRtpReceiver.__remote_streams`, `StreamStatistics.packets_received` and
   `RTCRtpReceiver.__remote_bitrate_estimator`: the count of packets received per stream that its receiver
   reports give the loss from, and the delay-based estimate (REMB) each packet feeds (`uncounted`:
   `fec.protect`, so that a packet rebuilt from FEC or unwrapped from RTX for RED is not counted as received,
   as libwebrtc does not, and a rebuilt one is not read as a packet delayed since its send time).
15. `RTCRtpReceiver._send_rtcp_nack`: how a receiver NACKs, for NACKs that fall due between packets
   (`nack_sender`: `recovery.recover_losses`).

Name-mangled attributes fail silently when a release renames them (aiortc would read its own, and ours would
sit unused), so the version is checked where this module is imported, which is before any server, client or
session exists: another aiortc stops the program with `AiortcVersionError`.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Awaitable, Callable, Iterator
from importlib.metadata import version

from aiortc import RTCPeerConnection, RTCRtpCodecParameters, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs import h264, vpx
from aiortc.codecs.base import Encoder
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport, SRTPProtectionProfile
from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.rtp import RTP_HISTORY_SIZE, AnyRtcpPacket, RtcpReceiverInfo, RtcpRrPacket, RtcpSrPacket, RtpPacket
from OpenSSL import SSL

AIORTC_VERSION = "1.16.0"  # the version pyproject.toml pins, whose private API the hooks were written for


class AiortcVersionError(RuntimeError):
    """An aiortc other than AIORTC_VERSION: its private API may differ from what the hooks touch."""


def check_version(installed: str | None = None) -> None:
    """Refuse an aiortc other than AIORTC_VERSION (`installed`: the installed one, by default)."""
    installed = version("aiortc") if installed is None else installed
    if installed != AIORTC_VERSION:
        raise AiortcVersionError(
            f"aiortc {installed} is installed, but Backdrop's hooks into aiortc's private API "
            f"(server/rtc/aiortc_hooks.py) were written for aiortc {AIORTC_VERSION}: install aiortc=="
            f"{AIORTC_VERSION} (pyproject.toml pins it), or check each hook against {installed} and update "
            "AIORTC_VERSION"
        )


check_version()


# 1. The codecs of a transceiver, in the answer's order.
def codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs `transceiver` negotiated, in the order the answer lists them (none before negotiation)."""
    return list(getattr(transceiver, "_codecs", []))


def set_codecs(transceiver: RTCRtpTransceiver, codecs: list[RTCRtpCodecParameters]) -> None:
    """Reorder `transceiver`'s negotiated codecs (between setRemoteDescription and createAnswer)."""
    transceiver._codecs = codecs


# 2. A sender's encoder.
def encoder(sender: RTCRtpSender) -> Encoder | None:
    """`sender`'s encoder (None before its first frame, unless one was given)."""
    return getattr(sender, "_RTCRtpSender__encoder", None)


def set_encoder(sender: RTCRtpSender, encoder: Encoder) -> None:
    """Give `sender` its encoder (after setLocalDescription, before the first frame: aiortc keeps it)."""
    sender._RTCRtpSender__encoder = encoder  # type: ignore[attr-defined]


# 3. aiortc's encoders: where each keeps its target bitrate, and VP8's payloads.
TARGET_BITRATE = {"vp8": "_Vp8Encoder__target_bitrate", "h264": "_H264Encoder__target_bitrate"}


def vp8_packetize(data: bytes, picture_id: int) -> list[bytes]:
    """One encoded VP8 frame as aiortc's RTP payloads (its payload descriptors, with `picture_id`)."""
    return vpx.Vp8Encoder._packetize(data, picture_id)


def h264_packetize(data: bytes) -> list[bytes]:
    """One encoded H.264 access unit (Annex B) as aiortc's RTP payloads (STAP-A, FU-A)."""
    return h264.H264Encoder._packetize(h264.H264Encoder._split_bitstream(data))


# 4. A receiver's jitter buffer.
def set_jitter_buffer(receiver: RTCRtpReceiver, buffer: JitterBuffer) -> None:
    """Give `receiver` its jitter buffer (after setRemoteDescription, before media flows)."""
    receiver._RTCRtpReceiver__jitter_buffer = buffer  # type: ignore[attr-defined]


# 5. What a jitter buffer holds.
def buffered(buffer: JitterBuffer) -> Iterator[RtpPacket | None]:
    """The buffer's slots from its oldest packet on (None for a packet not received); nothing when empty."""
    if buffer._origin is None:
        return
    for i in range(buffer.capacity):
        yield buffer._packets[(buffer._origin + i) % buffer.capacity]


def payload(packet: RtpPacket) -> bytes:
    """A received packet's depayloaded bytes, as the receiver stored them on it."""
    data: bytes = packet._data  # type: ignore[attr-defined]
    return data


# 6. A connection's DTLS certificates and the context each builds.
class CipherCertificate(RTCCertificate):
    """aiortc's certificate, whose DTLS context offers the cipher suites `CIPHERS` (OpenSSL's list)."""

    CIPHERS: bytes = b""

    def _create_ssl_context(self, srtp_profiles: list[SRTPProtectionProfile]) -> SSL.Context:
        context = super()._create_ssl_context(srtp_profiles)
        if self.CIPHERS:
            context.set_cipher_list(self.CIPHERS)
        return context


def set_certificates(pc: RTCPeerConnection, certificates: list[RTCCertificate]) -> None:
    """Give `pc` its DTLS certificates (after the constructor, before any transport is made)."""
    pc._RTCPeerConnection__certificates = certificates  # type: ignore[attr-defined]


# 7. A receiver's NACK generator.
def set_nack_generator(receiver: RTCRtpReceiver, generator: NackGenerator) -> None:
    """Give a video `receiver` its NACK generator (after setRemoteDescription, before media flows)."""
    receiver._RTCRtpReceiver__nack_generator = generator  # type: ignore[attr-defined]


# 8. A sender's measured round trip.
def round_trip(sender: RTCRtpSender) -> float | None:
    """The round trip (seconds) `sender` measured from receiver reports, or None before the first."""
    rtt: float | None = getattr(sender, "_RTCRtpSender__rtt", None)
    return rtt


# 9. A receiver's decoder queue.
def decoder_queue(receiver: RTCRtpReceiver) -> queue.Queue:
    """The queue `receiver`'s decoder thread reads (codec, frame) from; None ends it."""
    frames: queue.Queue = receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
    return frames


# 10. A sender's answer to a NACK.
def retransmitter(sender: RTCRtpSender) -> Callable[[int], Awaitable[None]]:
    """`sender`'s own resend of one sequence number (as RTX when negotiated; nothing if out of its history)."""
    resend: Callable[[int], Awaitable[None]] = sender._retransmit
    return resend


def set_retransmitter(sender: RTCRtpSender, resend: Callable[[int], Awaitable[None]]) -> None:
    """Have `sender` call `resend` for each sequence number a NACK lists."""
    sender._retransmit = resend  # type: ignore[method-assign,assignment]


# 11. The receiver reports a sender gets, and what it has sent.
def on_receiver_reports(sender: RTCRtpSender, callback: Callable[[RtcpReceiverInfo], None]) -> None:
    """Have `sender` call `callback` with each report block about its stream in the receiver reports (RR, or an
    SR's) it gets, after aiortc has taken them (its round trip and stats updated)."""
    handle = sender._handle_rtcp_packet

    async def handle_and_tell(packet: AnyRtcpPacket) -> None:
        await handle(packet)
        if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            for report in packet.reports:
                if report.ssrc == sender._ssrc:
                    callback(report)

    sender._handle_rtcp_packet = handle_and_tell  # type: ignore[method-assign]


def sent(sender: RTCRtpSender) -> tuple[int, int]:
    """(packets, payload bytes) `sender` has sent as RTP, retransmissions not counted."""
    packets: int = getattr(sender, "_RTCRtpSender__packet_count", 0)
    octets: int = getattr(sender, "_RTCRtpSender__octet_count", 0)
    return packets, octets


def holds(sender: RTCRtpSender, sequence: int) -> bool:
    """Whether `sender` has sent packet `sequence` and still holds it in its history (of the last 128)."""
    history: dict[int, RtpPacket] = getattr(sender, "_RTCRtpSender__rtp_history", {})
    packet = history.get(sequence % RTP_HISTORY_SIZE)
    return packet is not None and packet.sequence_number == sequence


def newest_sequence(sender: RTCRtpSender) -> int | None:
    """The sequence number of the newest RTP packet in `sender`'s history (of the last 128 sent); None before
    the first."""
    history: dict[int, RtpPacket] = getattr(sender, "_RTCRtpSender__rtp_history", {})
    numbers = [packet.sequence_number for packet in list(history.values())]
    if not numbers:
        return None
    ref = numbers[0]
    return max(numbers, key=lambda n: (n - ref + 0x8000) % 0x10000)


def transport_sent(sender: RTCRtpSender) -> tuple[int, int]:
    """(packets, bytes) `sender`'s transport has sent (SRTP and SRTCP, and what else it carries): the counters
    its stats report, read without building the report (getStats 20 times a second was a tenth of the event
    loop's time per session)."""
    transport = sender.transport
    packets: int = getattr(transport, "_RTCDtlsTransport__tx_packets", 0)
    octets: int = getattr(transport, "_RTCDtlsTransport__tx_bytes", 0)
    return packets, octets


# 12. The RTP bytes a transport sends and receives.
def rtp_sender(transport: RTCDtlsTransport) -> Callable[[bytes], Awaitable[None]]:
    """`transport`'s own send of one RTP or RTCP packet's bytes (it protects them with SRTP)."""
    send: Callable[[bytes], Awaitable[None]] = transport._send_rtp
    return send


def set_rtp_sender(transport: RTCDtlsTransport, send: Callable[[bytes], Awaitable[None]]) -> None:
    """Have every sender on `transport` send its RTP and RTCP packets' bytes through `send`."""
    transport._send_rtp = send  # type: ignore[method-assign,assignment]


def rtp_handler(transport: RTCDtlsTransport) -> Callable[[bytes, int], Awaitable[None]]:
    """`transport`'s own handling of one received RTP packet's bytes (parse, route to its receiver)."""
    handle: Callable[[bytes, int], Awaitable[None]] = transport._handle_rtp_data
    return handle


def set_rtp_handler(transport: RTCDtlsTransport, handle: Callable[[bytes, int], Awaitable[None]]) -> None:
    """Have `transport` pass each received RTP packet's bytes (and arrival ms) to `handle`."""
    transport._handle_rtp_data = handle  # type: ignore[method-assign,assignment]


# 13. A sender's streams and its RTCP.
def sender_ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    """(media SSRC, RTX SSRC) of `sender`."""
    return sender._ssrc, sender._rtx_ssrc


def rtcp_handler(sender: RTCRtpSender) -> Callable[..., Awaitable[None]]:
    """`sender`'s own handling of an RTCP packet routed to it."""
    handle: Callable[..., Awaitable[None]] = sender._handle_rtcp_packet
    return handle


def set_rtcp_handler(sender: RTCRtpSender, handle: Callable[..., Awaitable[None]]) -> None:
    """Have the RTCP packets routed to `sender` go to `handle`."""
    sender._handle_rtcp_packet = handle  # type: ignore[method-assign,assignment]


# 14. What a receiver counts as received.
@contextlib.contextmanager
def uncounted(receiver: RTCRtpReceiver, ssrc: int, estimated: bool = False) -> Iterator[None]:
    """Whatever `receiver` counts as received on stream `ssrc` inside the block is taken back out, and unless
    `estimated`, what it handles there does not feed its bandwidth estimate (a rebuilt packet's send time is
    the lost packet's)."""
    streams: dict = getattr(receiver, "_RTCRtpReceiver__remote_streams", {})
    before = streams[ssrc].packets_received if ssrc in streams else 0
    estimator = getattr(receiver, "_RTCRtpReceiver__remote_bitrate_estimator", None)
    if not estimated:
        receiver._RTCRtpReceiver__remote_bitrate_estimator = None  # type: ignore[attr-defined]
    try:
        yield
    finally:
        receiver._RTCRtpReceiver__remote_bitrate_estimator = estimator  # type: ignore[attr-defined]
        stream = streams.get(ssrc)
        if stream is not None and stream.packets_received > before:
            stream.packets_received -= stream.packets_received - before


# 15. A receiver's NACK.
def nack_sender(receiver: RTCRtpReceiver) -> Callable[[int, list[int]], Awaitable[None]]:
    """What sends `receiver`'s RTCP NACK for a media stream (its SSRC) and the sequence numbers it lists."""
    send: Callable[[int, list[int]], Awaitable[None]] = receiver._send_rtcp_nack
    return send
