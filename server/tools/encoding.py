"""VP8's real-time speeds against each other on one video: the encoder's CPU time a frame, what it costs the
picture a viewer decodes (PSNR), and the bitrate, with the server's own encoder (encoders.Vp8Encoder)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..rtc.encoders import Vp8Encoder
from .client import photo_frames
from .loadtest import photo

SIZE = (640, 480)
BITRATE = 2_000_000  # the server's default ceiling, where a session on a clean link sits


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


def depacketize(payloads: list[bytes]) -> bytes:
    """A VP8 frame from its RTP payloads: each less its payload descriptor (RFC 7741)."""
    frame = bytearray()
    for payload in payloads:
        length = 1
        if payload[0] & 0x80:  # extended control bits
            length = 2
            if payload[1] & 0x80:  # picture id, 7 or 15 bits
                length += 2 if payload[2] & 0x80 else 1
            length += bool(payload[1] & 0x40) + bool(payload[1] & 0x30)  # TL0PICIDX; TID/KEYIDX
        frame += payload[length:]
    return bytes(frame)


def _encode(frames: list[np.ndarray], speed: int) -> tuple[float, float, float]:
    """(encoder CPU ms a frame, mean PSNR in dB of the luma a viewer decodes, kb/s) at `speed`, at 30 fps."""
    encoder, decoder = Vp8Encoder(BITRATE, speed), av.CodecContext.create("libvpx", "r")
    cpu_s, psnr, sent = 0.0, [], 0
    height = frames[0].shape[0] * 2 // 3
    for index, planes in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts, frame.time_base = index, Fraction(1, 30)
        start = time.thread_time()
        payloads, _ = encoder.encode(frame)
        cpu_s += time.thread_time() - start
        data = depacketize(payloads)
        sent += len(data)
        for picture in decoder.decode(av.Packet(data)):
            error = (picture.to_ndarray()[:height].astype(np.float32) - planes[:height]) ** 2
            psnr.append(10 * np.log10(255**2 / max(float(error.mean()), 1e-6)))
    return 1000 * cpu_s / len(frames), float(np.mean(psnr)), sent * 8 * 30 / len(frames) / 1000


def compare_speeds(frames: list[np.ndarray], speeds: list[int], rounds: int = 3) -> dict:
    """Each speed `rounds` times, in turn (the order reversed every other round, so that a host's drift falls on
    all alike); the medians, and each against the first speed."""
    times: dict[int, list[float]] = {speed: [] for speed in speeds}
    quality: dict[int, tuple[float, float]] = {}
    for round_ in range(rounds):
        for speed in speeds if round_ % 2 == 0 else speeds[::-1]:
            ms, psnr, kbps = _encode(frames, speed)
            times[speed].append(ms)
            quality[speed] = (psnr, kbps)  # the same in every round: libvpx at a fixed speed is deterministic
    base_ms, base_psnr = statistics.median(times[speeds[0]]), quality[speeds[0]][0]
    return {
        "frames": len(frames),
        "size": f"{frames[0].shape[1]}x{frames[0].shape[0] * 2 // 3}",
        "bitrate_kbps": BITRATE // 1000,
        "rounds": rounds,
        "speeds": [
            {
                "speed": speed,
                "encode_ms_per_frame": round(statistics.median(times[speed]), 3),
                "encode_ms_each_round": [round(ms, 3) for ms in times[speed]],
                "time_vs_first": round(statistics.median(times[speed]) / base_ms, 3),
                "psnr_db": round(quality[speed][0], 2),
                "psnr_vs_first_db": round(quality[speed][0] - base_psnr, 2),
                "kbps": round(quality[speed][1]),
            }
            for speed in speeds
        ],
    }
