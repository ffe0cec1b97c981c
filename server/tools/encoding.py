"""The server's video encoders at several settings against each other on one video (VP8's real-time speeds,
x264's presets): the encoder's CPU time a frame, what it costs the picture a viewer decodes (PSNR), and the
bitrate, with the encoders sessions get (encoders.Vp8Encoder, encoders.H264Encoder)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from aiortc import RTCRtpCodecParameters
from aiortc.codecs import depayload
from av.video.codeccontext import VideoCodecContext

from ..rtc.encoders import EncoderSettings, encoder_for
from .client import photo_frames
from .loadtest import photo

SIZE = (640, 480)
BITRATE = 2_000_000  # the server's default ceiling, where a session on a clean link sits
CODECS = {"vp8": ("VP8", "libvpx"), "h264": ("H264", "h264")}  # the RTP name, the decoder


def video_frames(
    path: Path, size: tuple[int, int] = SIZE, limit: int = 300, format: str = "yuv420p"
) -> list[np.ndarray]:
    """Up to `limit` frames of a video file, or of a folder of .jpg images in name order, at `size` (W, H), as
    yuv420p planes (or another of PyAV's formats, e.g. rgb24)."""
    pictures: Iterable[av.VideoFrame]
    if path.is_dir():
        from PIL import Image

        pictures = (av.VideoFrame.from_image(Image.open(p).convert("RGB")) for p in sorted(path.glob("*.jpg")))
    else:
        pictures = av.open(str(path)).decode(video=0)
    frames = []
    for picture in pictures:
        frames.append(picture.reformat(width=size[0], height=size[1], format=format).to_ndarray())
        if len(frames) == limit:
            break
    if not frames:
        raise ValueError(f"no frames in {path}")
    return frames


def loadtest_frames(count: int = 150) -> list[np.ndarray]:
    """The loadtest's camera (a photo, shifted a few pixels a frame) as yuv420p planes at 640x480."""
    return [
        av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p").to_ndarray()
        for pixels in photo_frames(photo(), size=(SIZE[1], SIZE[0]), count=count)
    ]


def parameters(codec: str) -> RTCRtpCodecParameters:
    """What a session negotiates for `codec` ("vp8" or "h264")."""
    return RTCRtpCodecParameters(mimeType=f"video/{CODECS[codec][0]}", clockRate=90000)


def depacketize(codec: str, payloads: list[bytes]) -> bytes:
    """One encoded frame from its RTP payloads, as aiortc's receiver rebuilds it."""
    return b"".join(depayload(parameters(codec), payload) for payload in payloads)


def _encode(frames: list[np.ndarray], codec: str, setting: int | str) -> tuple[float, float, float]:
    """(encoder CPU ms a frame, mean PSNR in dB of the luma a viewer decodes, kb/s), at 30 fps."""
    # The encoder a session negotiating VP8 or H.264 gets, with one setting changed: VP8's speed ("vp8"), its
    # finest quantizer ("vp8-qmin") or H.264's preset ("h264").
    if codec == "vp8":
        settings = EncoderSettings(max_bitrate=BITRATE, vp8_speed=int(setting))
    elif codec == "vp8-qmin":
        settings, codec = EncoderSettings(max_bitrate=BITRATE, vp8_qmin=int(setting)), "vp8"
    else:
        settings = EncoderSettings(max_bitrate=BITRATE, h264_preset=str(setting))
    encoder = encoder_for(parameters(codec), settings)
    assert encoder is not None
    decoder = av.CodecContext.create(CODECS[codec][1], "r")
    assert isinstance(decoder, VideoCodecContext)
    decoder.thread_count = 1  # no decoding threads running while an encode is timed
    cpu_s, psnr, sent = 0.0, [], 0
    height = frames[0].shape[0] * 2 // 3
    for index, planes in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts, frame.time_base = index * 3000, Fraction(1, 90000)  # as a track times its frames
        # The process's CPU time, not this thread's: x264 encodes in threads of its own where it has cores.
        start = time.process_time()
        payloads, _ = encoder.encode(frame)
        cpu_s += time.process_time() - start
        data = depacketize(codec, payloads)
        sent += len(data)
        for picture in decoder.decode(av.Packet(data)):
            error = (picture.to_ndarray()[:height].astype(np.float32) - planes[:height]) ** 2
            psnr.append(10 * np.log10(255**2 / max(float(error.mean()), 1e-6)))
    return 1000 * cpu_s / len(frames), float(np.mean(psnr)), sent * 8 * 30 / len(frames) / 1000


def compare_encoders(frames: list[np.ndarray], encoders: list[tuple[str, int | str]], rounds: int = 3) -> dict:
    """Each (codec, setting) `rounds` times, in turn (the order reversed every other round, so that a host's
    drift falls on all alike); the medians, and each against the first."""
    times: dict[tuple[str, int | str], list[float]] = {encoder: [] for encoder in encoders}
    quality: dict[tuple[str, int | str], tuple[float, float]] = {}
    for round_ in range(rounds):
        for encoder in encoders if round_ % 2 == 0 else encoders[::-1]:
            ms, psnr, kbps = _encode(frames, *encoder)
            times[encoder].append(ms)
            quality[encoder] = (psnr, kbps)  # the same every round: at a fixed speed the encoders are deterministic
    base_ms, base_psnr = statistics.median(times[encoders[0]]), quality[encoders[0]][0]
    return {
        "frames": len(frames),
        "size": f"{frames[0].shape[1]}x{frames[0].shape[0] * 2 // 3}",
        "bitrate_kbps": BITRATE // 1000,
        "rounds": rounds,
        "encoders": [
            {
                "codec": codec,
                "setting": setting,
                "encode_ms_per_frame": round(statistics.median(times[(codec, setting)]), 3),
                "encode_ms_each_round": [round(ms, 3) for ms in times[(codec, setting)]],
                "time_vs_first": round(statistics.median(times[(codec, setting)]) / base_ms, 3),
                "psnr_db": round(quality[(codec, setting)][0], 2),
                "psnr_vs_first_db": round(quality[(codec, setting)][0] - base_psnr, 2),
                "kbps": round(quality[(codec, setting)][1]),
            }
            for codec, setting in encoders
        ],
    }
