"""VP8's speed under load (overuse.py): raised while the cores cannot keep up, lowered once they can, and what
an encoder does when it moves: a restart with a keyframe, the same picture."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from server.rtc.encoders import Vp8Encoder
from server.rtc.overuse import DOWN_AFTER, UP_AFTER, EncoderSpeed
from server.tools.encoding import compare_encoders, depacketize, loadtest_frames

pytestmark = pytest.mark.unit


class _Process:
    """What `EncoderSpeed.follow` reads of a process: its CPU time and frame counters, a second at a time."""

    def __init__(self, speed: EncoderSpeed) -> None:
        self.speed, self.now, self.cpu_s, self.frames_in, self.dropped = speed, 0.0, 0.0, 0, 0.0
        speed.update(self.now, self.cpu_s, self.frames_in, 0)

    def run(self, seconds: int, busy: float, dropped_share: float) -> list[int]:
        """`seconds` in which its cores run `busy` of the time, receiving 90 frames a second and dropping
        `dropped_share` of them; the speed after each."""
        speeds = []
        for _ in range(seconds):
            self.now += 1.0
            self.cpu_s += busy * self.speed.cores
            self.frames_in += 90
            self.dropped += 90 * dropped_share
            speeds.append(self.speed.update(self.now, self.cpu_s, self.frames_in, round(self.dropped)))
        return speeds


def test_the_speed_stays_where_it_was_set_while_the_cores_keep_up() -> None:
    speed = EncoderSpeed(floor=6, ceiling=10, cores=1)
    assert set(_Process(speed).run(30, busy=0.97, dropped_share=0.0)) == {6}  # busy, but every frame gets through
    assert set(_Process(speed).run(30, busy=0.3, dropped_share=0.2)) == {6}  # drops that are not the CPU's doing
    assert speed.changes == 0


def test_overloaded_cores_raise_the_speed_to_the_fastest_and_quiet_ones_step_it_back() -> None:
    speed = EncoderSpeed(floor=6, ceiling=10, cores=2)
    process = _Process(speed)
    speeds = process.run(10, busy=0.97, dropped_share=0.25)
    assert speeds[UP_AFTER - 2] == 6 and set(speeds[UP_AFTER - 1 :]) == {10}  # straight to the fastest
    # Cores with room (fewer sessions now): one step back after DOWN_AFTER quiet seconds, another after as many.
    speeds = process.run(2 * DOWN_AFTER, busy=0.4, dropped_share=0.0)
    assert speeds[DOWN_AFTER - 2] == 10 and speeds[DOWN_AFTER - 1] == 8 and speeds[-1] == 6
    assert speed.changes == 3
    # Busy but keeping up at the faster speed is not quiet: no step back that would overload again.
    speed = EncoderSpeed(floor=6, ceiling=10, cores=1)
    process = _Process(speed)
    process.run(5, busy=0.97, dropped_share=0.25)
    assert set(process.run(3 * DOWN_AFTER, busy=0.8, dropped_share=0.0)) == {10}


def test_a_ceiling_at_the_floor_keeps_the_speed_fixed() -> None:
    speed = EncoderSpeed(floor=8, ceiling=8, cores=1)
    assert set(_Process(speed).run(20, busy=1.0, dropped_share=0.4)) == {8}
    with pytest.raises(ValueError, match="below the configured one"):
        EncoderSpeed(floor=8, ceiling=6, cores=1)


def _frame(rgb: tuple[int, int, int], index: int) -> av.VideoFrame:
    pixels = np.empty((480, 640, 3), np.uint8)
    pixels[:] = rgb
    pixels[160:320, 240:400] = (255, 255, 255)  # something with edges
    frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
    frame.pts, frame.time_base = index * 3000, Fraction(1, 90000)
    return frame


def test_an_encoder_restarts_with_a_keyframe_at_a_new_speed_and_the_picture_stays() -> None:
    speed = EncoderSpeed(floor=6, ceiling=10, cores=1)
    encoder = Vp8Encoder(2_000_000, speed)
    decoder = av.CodecContext.create("libvpx", "r")

    def sent(index: int) -> tuple[bool, np.ndarray]:
        """(whether the encoded frame is a keyframe, the picture decoded from it)"""
        payloads, _ = encoder.encode(_frame((0, 0, 255), index))
        data = depacketize("vp8", payloads)
        (picture,) = decoder.decode(av.Packet(data))
        return not data[0] & 1, picture.to_ndarray(format="rgb24")  # RFC 6386: bit 0 clear is a keyframe

    assert sent(0)[0] and not any(sent(index)[0] for index in range(1, 5))
    assert encoder.opened_speed == 6
    _Process(speed).run(UP_AFTER, busy=1.0, dropped_share=0.3)
    restarted, picture = sent(5)
    assert restarted and encoder.opened_speed == 10  # a keyframe: the viewer's decoder starts afresh
    assert np.abs(picture[:100, :100].astype(int) - (0, 0, 255)).mean() < 8  # the background
    assert np.abs(picture[200:280, 280:360].astype(int) - 255).mean() < 8  # the square
    assert not sent(6)[0]  # and it goes on from there


def test_the_encoder_benchmark_reports_each_setting_against_the_first() -> None:
    """`backdrop bench --vp8-speeds ... --h264-presets ...`: each encoder's time, the decoded picture's PSNR and
    the bitrate."""
    report = compare_encoders(loadtest_frames(count=20), [("vp8", 6), ("vp8", 10), ("h264", "veryfast")], rounds=2)
    first, faster, h264 = report["encoders"]
    assert (report["frames"], report["size"], first["setting"], faster["setting"]) == (20, "640x480", 6, 10)
    assert (h264["codec"], h264["setting"]) == ("h264", "veryfast")
    assert first["time_vs_first"] == 1.0 and len(faster["encode_ms_each_round"]) == 2
    assert first["psnr_vs_first_db"] == 0.0
    for row in report["encoders"]:
        assert row["psnr_db"] > 30 and 0 < row["kbps"] < 4000, row
