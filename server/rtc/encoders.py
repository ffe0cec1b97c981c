"""What the server sends: the codec its answers prefer and the bitrate its video encoders may reach.

aiortc starts VP8 at 500 kb/s and never goes above 1.5 Mb/s (H.264: 1 and 3 Mb/s), visibly softer than a
camera at 640x480. Here each sender gets an encoder that starts at the operator's ceiling and follows the
receiver's estimate (REMB) below it. aiortc creates its encoder on the first frame unless one is there;
`fit_senders` puts one there. The private parts of aiortc this touches are reached through `aiortc_hooks`.

VP8 is encoded with aiortc's libvpx settings except for the temporal denoiser, which is off: the frames it
would clean have been through the sender's own codec already, and it cost a quarter of each encode and
0.3 dB (see VP8_OPTIONS); and for the finest quantizer, 10 rather than 2, so an easy picture is not sent
sharper than anyone can see at the whole ceiling's cost (see VP8_QMIN).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av
from aiortc import RTCPeerConnection, RTCRtpCodecParameters
from aiortc.codecs import h264, vpx
from aiortc.codecs.base import Encoder
from aiortc.mediastreams import VIDEO_TIME_BASE, convert_timebase
from av.frame import Frame
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType, VideoFrame

from ..pipeline.workers import cpu_cores
from . import aiortc_hooks
from .resend import resend_copies

Codec = Literal["vp8", "h264"]
MIME = {"vp8": "video/vp8", "h264": "video/h264"}


# The finest quantizer (libvpx's rc_min_quantizer, 0-63) the rate control may pick. aiortc lets it go to 2, so
# an easy picture (a talking head on a flat or blurred background) takes the whole bitrate ceiling to be sent
# at about 50 dB, sharper than anyone can tell, and every one of those bits costs the encoder, the packets'
# path and the link. At 10 the three clips and the loadtest's camera went out at 46-49 dB PSNR with 0.35-0.65x
# the kb/s and 0.69-0.86x the encoder's time; busy full-body video (33-35 dB) never reaches it and is unchanged
# (README "Sessions per core").
VP8_QMIN = 10


@dataclass(frozen=True)
class EncoderSettings:
    """The codec answers put first (the peer may offer only the other), the bitrate ceiling (bits/s), VP8's
    encoding speed and H.264's preset."""

    codec: Codec = "vp8"
    max_bitrate: int = 2_000_000
    vp8_speed: int = 6  # libvpx's real-time speed, 4 (best pictures) to 16 (least CPU); aiortc's is 6
    vp8_speed_max: int | None = None  # the fastest it goes while the CPU cannot keep up (overuse.py); None: fixed
    h264_preset: str = "veryfast"  # x264's speed preset for H.264 sent back (aiortc leaves x264's, medium)
    start_bitrate: int | None = None  # where each encoder starts (bits/s); None: at the ceiling
    vp8_qmin: int = VP8_QMIN  # the finest quantizer VP8's rate control may use (aiortc's: 2)


class BitrateCeiling:
    """A target bitrate that starts at `ceiling` and follows the receiver's estimates below it."""

    _stored: str  # the base class's private attribute its encode() reads
    _floor: int  # aiortc's own minimum for the codec
    ceiling: int

    def __init__(self, ceiling: int, start: int | None = None) -> None:
        super().__init__()  # the codec's aiortc encoder, next in the MRO
        self.ceiling = ceiling
        self.limit = ceiling  # a lower ceiling for now, from the losses the receiver reports (congestion.py)
        # Whether that limit is what a narrow link carries (its queue overflowed), not a step back from random
        # loss: FEC (fec.py) would only add to what such a queue drops.
        self.link_bound = False
        self.target_bitrate = ceiling if start is None else start

    @property
    def target_bitrate(self) -> int:
        return int(getattr(self, self._stored))

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        top = min(self.ceiling, self.limit)
        setattr(self, self._stored, max(min(self._floor, top), min(int(bitrate), top)))

    def cap(self, limit: int) -> None:
        """Hold the target at most at `limit` (up to the ceiling) until the next cap; REMB moves it below."""
        raised = limit > self.limit
        self.limit = min(int(limit), self.ceiling)
        # Lower at once; when the cap rises, the receiver's next estimate (REMB) raises the target.
        if not raised:
            self.target_bitrate = self.target_bitrate

    def outdated(self, codec: VideoCodecContext, frame: VideoFrame) -> bool:
        """Whether `codec` must be reopened for `frame`: another size, or a target over 10% away from the
        bitrate it was opened at (a restart is a keyframe: not for less)."""
        resized = (frame.width, frame.height) != (codec.width, codec.height)
        opened = codec.bit_rate or 0
        return resized or abs(self.target_bitrate - opened) > 0.1 * opened


# libvpx's real-time settings as aiortc chose them (a 1 s rate-control buffer, CBR, one token partition),
# with `noise-sensitivity` 0 instead of 4: the temporal denoiser took 25% of an encode at 640x480 and lowered
# the PSNR of what the viewer decodes by 0.3 dB at 2 Mb/s (150 frames of moving people, one thread).
# "cpu-used" is set per encoder from its speed (the configured one, raised under load: overuse.py): negative in
# real-time mode, a fixed speed (a positive one would let libvpx pick its own from how long encodes take, blind
# to the other sessions on the same cores).
VP8_OPTIONS = {
    "deadline": "realtime",
    "lag-in-frames": "0",
    "noise-sensitivity": "0",
    "overshoot-pct": "15",
    "partitions": "0",
    "static-thresh": "1",
    "undershoot-pct": "100",
}


class Vp8Encoder(BitrateCeiling, vpx.Vp8Encoder):
    """aiortc's VP8 encoder (its packetizer, picture ids, bitrate) with our libvpx options.

    `speed`: libvpx's real-time speed, or what says it for each frame (overuse.EncoderSpeed); a new one
    restarts the encoder with a keyframe, as a new bitrate does. `qmin`: the finest quantizer (see VP8_QMIN).
    """

    _stored = aiortc_hooks.TARGET_BITRATE["vp8"]
    _floor = vpx.MIN_BITRATE

    def __init__(
        self,
        ceiling: int,
        speed: int | Callable[[], int] = EncoderSettings.vp8_speed,
        start: int | None = None,
        qmin: int = VP8_QMIN,
    ) -> None:
        super().__init__(ceiling, start)
        self.speed = speed if callable(speed) else lambda: speed
        self.qmin = qmin
        self.opened_speed: int | None = None  # the speed of the open encoder

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        assert isinstance(frame, VideoFrame)
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        assert frame.pts is not None and frame.time_base is not None  # a track's frames are timed
        codec, speed = self.codec, self.speed()
        if codec is not None and (self.outdated(codec, frame) or speed != self.opened_speed):
            codec = None
        if force_keyframe:
            frame.pict_type = PictureType.I
        if codec is None:
            codec = self.codec = self._open(frame.width, frame.height, speed)
        data = b"".join(bytes(packet) for packet in codec.encode(frame))
        payloads = aiortc_hooks.vp8_packetize(data, self.picture_id)
        self.picture_id = (self.picture_id + 1) % (1 << 15)
        return payloads, convert_timebase(frame.pts, frame.time_base, VIDEO_TIME_BASE)

    def _open(self, width: int, height: int, speed: int) -> VideoCodecContext:
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
        codec.bit_rate = bitrate = self.target_bitrate
        codec.gop_size = 3000  # keyframes only when the receiver asks (PLI)
        codec.qmin, codec.qmax = self.qmin, 56
        # minrate = maxrate = bit_rate is CBR; FFmpeg's rc buffer is bufsize * 1000 / bit_rate ms: 1 s.
        codec.options = {
            **VP8_OPTIONS,
            "cpu-used": str(-speed),
            "bufsize": str(bitrate),
            "minrate": str(bitrate),
            "maxrate": str(bitrate),
        }
        codec.thread_count = vpx.number_of_threads(width * height, cpu_cores())  # aiortc's rule, on our cores
        self.opened_speed = speed
        return codec


class H264Encoder(BitrateCeiling, h264.H264Encoder):
    """aiortc's H.264 encoder (its packetizer, bitrate, x264 settings: Baseline, level 3.1, zerolatency) at an
    x264 preset of ours. aiortc leaves x264's default, medium: 14-22 ms a frame at 640x480 and 2 Mb/s on one
    core, 3.0-3.7x veryfast's, for -0.2 to +0.5 dB of PSNR (`backdrop bench --h264-presets`; README
    "Sessions per core")."""

    _stored = aiortc_hooks.TARGET_BITRATE["h264"]
    _floor = h264.MIN_BITRATE

    def __init__(self, ceiling: int, preset: str = EncoderSettings.h264_preset, start: int | None = None) -> None:
        super().__init__(ceiling, start)
        self.preset = preset

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        assert isinstance(frame, VideoFrame)
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        assert frame.pts is not None and frame.time_base is not None  # a track's frames are timed
        codec = self.codec
        if codec is not None and self.outdated(codec, frame):
            codec = None
        frame.pict_type = PictureType.I if force_keyframe else PictureType.NONE  # NONE: x264 decides
        if codec is None:
            codec = self.codec = self._open(frame.width, frame.height)
        data = b"".join(bytes(packet) for packet in codec.encode(frame))
        return aiortc_hooks.h264_packetize(data), convert_timebase(frame.pts, frame.time_base, VIDEO_TIME_BASE)

    def _open(self, width: int, height: int) -> VideoCodecContext:
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
        codec.bit_rate = self.target_bitrate
        codec.framerate = Fraction(h264.MAX_FRAME_RATE, 1)
        codec.time_base = Fraction(1, h264.MAX_FRAME_RATE)
        codec.options = {"level": "31", "tune": "zerolatency", "preset": self.preset}
        codec.profile = "Baseline"
        return codec


def encoder_for(
    codec: RTCRtpCodecParameters, settings: EncoderSettings, speed: Callable[[], int] | None = None
) -> Encoder | None:
    """Our encoder for a negotiated video codec, or None for a codec aiortc should handle itself; `speed`
    says VP8's speed for each frame (default: settings.vp8_speed)."""
    mime = codec.mimeType.lower()
    if mime == MIME["vp8"]:
        return Vp8Encoder(settings.max_bitrate, speed or settings.vp8_speed, settings.start_bitrate, settings.vp8_qmin)
    if mime == MIME["h264"]:
        return H264Encoder(settings.max_bitrate, settings.h264_preset, settings.start_bitrate)
    return None


def prefer_codec(pc: RTCPeerConnection, settings: EncoderSettings) -> None:
    """Put the preferred codec (and its retransmission format) first among what each video transceiver
    negotiated from the offer (call between setRemoteDescription and createAnswer); the answer's first codec
    is the one both sides send."""
    wanted = MIME[settings.codec]
    for transceiver in pc.getTransceivers():
        if transceiver.kind != "video":
            continue
        codecs = aiortc_hooks.codecs(transceiver)
        preferred = {c.payloadType for c in codecs if c.mimeType.lower() == wanted}

        def rank(codec: RTCRtpCodecParameters, preferred: set[int | None] = preferred) -> int:
            base = codec.parameters.get("apt") if codec.mimeType.lower() == "video/rtx" else codec.payloadType
            return 0 if base in preferred else 1

        aiortc_hooks.set_codecs(transceiver, sorted(codecs, key=rank))  # stable: the offer's order within each rank


def fit_senders(pc: RTCPeerConnection, settings: EncoderSettings, speed: Callable[[], int] | None = None) -> int:
    """Give each video sender of `pc` our encoder for its negotiated codec (VP8 at `speed`, see overuse.py),
    and three resends for each packet NACKed (resend.py) (call after setLocalDescription, before media flows);
    returns how many it fitted."""
    fitted = 0
    for transceiver in pc.getTransceivers():
        codecs = aiortc_hooks.codecs(transceiver)
        if transceiver.kind != "video" or transceiver.sender.track is None or not codecs:
            continue
        resend_copies(transceiver.sender)
        encoder = encoder_for(codecs[0], settings, speed)
        if encoder is not None:
            aiortc_hooks.set_encoder(transceiver.sender, encoder)
            fitted += 1
    return fitted
