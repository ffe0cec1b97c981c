"""The bitrate under a narrow link: the loss-based cap (server/rtc/congestion.py) and the encoder's ceiling
it moves (server/rtc/encoders.py)."""

from __future__ import annotations

import pytest

from server.rtc.congestion import FLOOR, LossBasedCap
from server.rtc.encoders import Vp8Encoder

pytestmark = pytest.mark.unit


def test_heavy_loss_lowers_the_cap_light_loss_holds_it_none_raises_it() -> None:
    cap = LossBasedCap(2_000_000)
    assert cap.update(0.30) == 1_700_000  # 30% lost: down by half of it
    assert cap.update(0.05) == 1_700_000  # a few percent (Wi-Fi): NACKs repair that, the cap holds
    assert cap.update(0.0) == 1_836_000  # none: up 8% a report
    for _ in range(20):
        cap.update(0.0)
    assert cap.update(0.0) == 2_000_000  # never over the ceiling
    for _ in range(50):
        cap.update(0.9)
    assert cap.update(0.9) == FLOOR  # never under the floor


def test_the_encoder_follows_the_cap_and_remb_below_it() -> None:
    encoder = Vp8Encoder(2_000_000)
    assert encoder.target_bitrate == 2_000_000
    encoder.cap(600_000)
    assert encoder.target_bitrate == 600_000  # lowered at once
    encoder.target_bitrate = 1_500_000  # a receiver's estimate (REMB) above the cap
    assert encoder.target_bitrate == 600_000
    encoder.target_bitrate = 400_000  # below it
    assert encoder.target_bitrate == 400_000
    encoder.cap(900_000)
    assert encoder.target_bitrate == 400_000  # a higher cap waits for the receiver's next estimate
    encoder.target_bitrate = 1_500_000
    assert encoder.target_bitrate == 900_000
    encoder.cap(5_000_000)
    encoder.target_bitrate = 3_000_000
    assert encoder.target_bitrate == 2_000_000  # the configured ceiling stays the ceiling


def test_an_encoder_can_start_below_its_ceiling() -> None:
    encoder = Vp8Encoder(2_000_000, start=400_000)
    assert encoder.target_bitrate == 400_000  # a narrow link is not overfilled from the first frame
    encoder.target_bitrate = 1_200_000  # the receiver's estimate raises it
    assert encoder.target_bitrate == 1_200_000
