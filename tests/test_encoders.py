"""The server's encoders: H.264 at our x264 preset (aiortc leaves medium), VP8 with a floor under its quantizer."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from server.rtc.encoders import H264Encoder
from server.tools.encoding import compare_encoders, depacketize, loadtest_frames

pytestmark = pytest.mark.unit


# What x264 writes of each preset in the SEI of its first frame (its options string).
SUBME = {"ultrafast": b"subme=0", "veryfast": b"subme=2", "medium": b"subme=7"}


@pytest.mark.parametrize("preset", ["veryfast", "ultrafast"])
def test_h264_is_encoded_at_the_preset_given_and_decodes_to_the_picture(preset: str) -> None:
    encoder, decoder = H264Encoder(2_000_000, preset), av.CodecContext.create("h264", "r")
    pixels = np.zeros((480, 640, 3), np.uint8)
    pixels[:] = (0, 0, 255)
    pixels[160:320, 240:400] = 255
    pictures, stream = [], b""
    for index in range(6):
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts, frame.time_base = index * 3000, Fraction(1, 90000)
        payloads, timestamp = encoder.encode(frame, force_keyframe=index == 4)
        assert timestamp == index * 3000
        data = depacketize("h264", payloads)
        stream += data
        pictures += decoder.decode(av.Packet(data))  # type: ignore[attr-defined]
    assert SUBME[preset] in stream and SUBME["medium"] not in stream  # not aiortc's preset
    assert len(pictures) == 6  # zerolatency: each frame out as it goes in
    assert [p.key_frame for p in pictures] == [True, False, False, False, True, False]  # the first, and as asked
    last = pictures[-1].to_ndarray(format="rgb24").astype(int)
    assert np.abs(last[:100, :100] - (0, 0, 255)).mean() < 8 and np.abs(last[200:280, 280:360] - 255).mean() < 8


def test_vp8_sends_an_easy_picture_with_fewer_bits_than_the_ceiling_and_no_visible_loss() -> None:
    """The default encoder's finest quantizer (VP8_QMIN) against aiortc's 2, on the loadtest's hand-held photo:
    about half the bits for a picture still above 45 dB (what a viewer decodes)."""
    report = compare_encoders(loadtest_frames(count=45), [("vp8", 6), ("vp8-qmin", 2)], rounds=1)
    ours, aiortcs = report["encoders"]
    assert ours["kbps"] < 0.75 * aiortcs["kbps"], report
    assert ours["psnr_db"] > 45.0 and aiortcs["psnr_db"] - ours["psnr_db"] < 4.0, report
