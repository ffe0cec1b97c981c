"""The bitrate under a narrow link: the cap from what receiver reports say got through (server/rtc/congestion.py),
the resend budget, and the encoder's ceiling they move (server/rtc/encoders.py)."""

from __future__ import annotations

import pytest
from aiortc import RTCPeerConnection, VideoStreamTrack
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket

from server.rtc import aiortc_hooks
from server.rtc.congestion import (
    DOUBTS,
    FLOOR,
    HEADROOM,
    HOLD,
    MARGIN,
    PROBE,
    REFOUND,
    Follower,
    LossBasedCap,
    ResendBudget,
    totals,
)
from server.rtc.encoders import Vp8Encoder
from server.rtc.resend import Resender

pytestmark = pytest.mark.unit


def test_without_rates_heavy_loss_lowers_the_cap_light_loss_holds_it_none_raises_it() -> None:
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


def test_an_overflowing_queue_sets_the_cap_to_what_got_through_in_one_report() -> None:
    cap = LossBasedCap(2_000_000)
    # 2 Mb/s into a 600 kb/s link: 70% lost, 580 kb/s through
    assert cap.update(0.70, delivered=580_000, sent=2_000_000) == int(MARGIN * 580_000)
    assert cap.link == 580_000 and cap.bound  # the link's rate: FEC goes off (fec.py)


def test_a_queue_filling_before_it_drops_lowers_the_cap_too() -> None:
    """The first report can come before any loss shows: what got through is far less than what was sent."""
    cap = LossBasedCap(2_000_000)
    assert cap.update(0.0, delivered=580_000, sent=1_200_000) == int(MARGIN * 580_000)


def test_random_loss_leaves_the_cap_alone() -> None:
    cap = LossBasedCap(2_000_000)
    for lost in (0.02, 0.05, 0.08, 0.04, 0.10):
        assert cap.update(lost, delivered=2_000_000 * (1 - lost), sent=2_000_000) == 2_000_000
    # a report of 10-20% (a long burst) takes off half the loss from what was sent, no more
    assert cap.update(0.12, delivered=1_760_000, sent=2_000_000) == 1_880_000
    assert not cap.bound  # a step back from loss, not a narrow link: FEC stays on


def test_the_cap_is_bound_to_the_link_until_it_is_back_at_the_ceiling() -> None:
    cap = LossBasedCap(1_000_000)
    cap.update(0.5, delivered=800_000, sent=1_600_000)
    assert cap.bound
    for _ in range(40):  # the link widened: clean reports at whatever is sent
        cap.update(0.0, delivered=cap.cap, sent=cap.cap)
        if cap.cap >= cap.ceiling:
            break
    assert cap.cap == cap.ceiling and not cap.bound


def test_the_cap_rises_on_clean_reports_holds_near_what_the_link_carried_then_probes() -> None:
    cap = LossBasedCap(2_000_000)
    cap.update(0.6, delivered=600_000, sent=1_500_000)
    assert cap.cap == pytest.approx(510_000)
    for _ in range(HOLD):  # near the link: held at the margin below it for a while
        assert cap.update(0.0, delivered=500_000, sent=500_000) == 510_000
    assert cap.update(0.0, delivered=500_000, sent=500_000) == pytest.approx(510_000 * PROBE, abs=1)  # then probes
    below = LossBasedCap(2_000_000)
    below.update(0.6, delivered=600_000, sent=1_500_000)
    below.cap = 400_000.0  # well under it (REMB's doing, or a floor): back up 8% a report, to the margin
    assert below.update(0.0, delivered=390_000, sent=390_000) == 432_000
    assert below.update(0.0, delivered=420_000, sent=420_000) == 466_560
    assert below.update(0.0, delivered=450_000, sent=450_000) == 503_884
    assert below.update(0.0, delivered=480_000, sent=480_000) == 510_000
    far = LossBasedCap(2_000_000)
    far.cap = 300_000.0
    assert far.update(0.0, delivered=290_000, sent=290_000) == pytest.approx(324_000, abs=1)  # no link known: 8%
    low = LossBasedCap(2_000_000)
    low.cap = 1_000_000.0
    assert low.update(0.0, delivered=400_000, sent=400_000) == 1_000_000  # never lowered by a rise's bound
    low.cap = 500_000.0
    assert low.update(0.0, delivered=200_000, sent=200_000) == 500_000  # 1.5x what got through is below it


def test_a_few_percent_lost_above_what_the_link_carried_is_the_link() -> None:
    cap = LossBasedCap(2_000_000)
    cap.update(0.5, delivered=600_000, sent=1_200_000)
    for _ in range(HOLD + 10):
        cap.update(0.0, delivered=cap.cap, sent=cap.cap)
    assert cap.cap > 600_000
    # probing past 600 kb/s: the queue fills and drops a few percent
    assert cap.update(0.04, delivered=595_000, sent=620_000) == int(MARGIN * 595_000)
    assert cap.clean == 0


def test_a_narrow_link_that_loses_at_random_is_not_overflowing_a_little_past_what_it_carried() -> None:
    """A 1 Mb/s link that also loses 5% at random: what goes out runs a few percent over what it last carried
    (the encoder's overshoot, resends), and its random loss is not the queue's; 2% more than that is."""
    cap = LossBasedCap(2_000_000)
    for _ in range(8):
        cap.update(0.05, delivered=0.95 * 900_000, sent=900_000)  # 5% at random, no link known: the cap holds
    assert cap.cap == 2_000_000 and not cap.bound
    cap.update(0.3, delivered=1_000_000, sent=1_600_000)
    held = cap.cap
    assert cap.bound and cap.overflows == 1
    assert cap.update(0.05, delivered=0.95 * 1_050_000, sent=1_050_000) == int(held)  # a little past it
    assert cap.overflows == 1
    assert cap.update(0.09, delivered=0.91 * 1_050_000, sent=1_050_000) < held  # its queue's loss on top
    assert cap.overflows == 2


def test_random_loss_taken_for_an_overflow_is_forgotten_and_fec_comes_back() -> None:
    """One report of 5% bursty loss that showed 22% looked like a queue overflowing; but the loss goes on as
    before while no more than that "link" carried is sent: it was the network's. The link is forgotten (FEC,
    which a bound link turns off, comes back), and a clean report raises the cap past the false link's margin."""
    cap = LossBasedCap(2_000_000)
    cap.update(0.22, delivered=1_500_000, sent=1_920_000)
    assert cap.bound and cap.cap == int(MARGIN * 1_500_000)
    for report in range(DOUBTS):
        assert cap.bound, report  # fewer reports are not enough: a queue's last drops may still show
        sent = cap.cap * 1.05  # the encoder at the cap, and resends
        assert sent <= 1_500_000
        held = cap.update(0.05, delivered=sent * 0.95, sent=sent)
        if report < DOUBTS - 1:
            assert held == int(MARGIN * 1_500_000)  # the cap holds
    assert not cap.bound and cap.link is None
    assert (cap.overflows, cap.forgotten) == (1, 1)  # what the session's stats show of it
    # and goes back towards where it was (at most HEADROOM over what got through): at 5% loss the clean reports
    # that raise it are rare, so a false alarm would otherwise keep it down for the rest of the call
    assert held == int(HEADROOM * sent * 0.95) > int(MARGIN * 1_500_000)
    assert cap.update(0.0, delivered=held, sent=held) == 2_000_000  # and a clean report, back at the ceiling


def test_a_forgotten_link_gives_back_no_more_than_the_cap_had() -> None:
    """A cap already stepped back for 10-20% loss when the false alarm came gets back that, not the ceiling."""
    cap = LossBasedCap(2_000_000)
    cap.update(0.12, delivered=1_760_000, sent=2_000_000)
    stepped = cap.cap
    assert stepped < 2_000_000 and not cap.bound
    cap.update(0.25, delivered=1_600_000, sent=1_850_000)
    assert cap.bound
    for _ in range(DOUBTS):
        cap.update(0.05, delivered=0.95 * cap.cap, sent=cap.cap)
    assert not cap.bound and cap.cap == stepped


def test_a_link_found_again_soon_after_it_was_forgotten_takes_twice_the_doubts_next_time() -> None:
    """A narrow link that also loses a few percent at random: forgotten, its cap given back, it overflows again
    at once. It was a link after all: the next time it takes twice the reports to forget it, so it is not
    overfilled every few seconds."""
    cap = LossBasedCap(2_000_000)

    def bound_then_doubted(reports: int) -> None:
        cap.update(0.3, delivered=1_000_000, sent=1_600_000)  # overflowing a 1 Mb/s link
        assert cap.bound
        for _ in range(reports):
            cap.update(0.05, delivered=0.95 * cap.cap, sent=cap.cap)  # random loss under it

    bound_then_doubted(DOUBTS)
    assert not cap.bound and cap.forgotten == 1
    bound_then_doubted(DOUBTS)  # found again within REFOUND reports
    assert cap.bound and cap.forgotten == 1  # three doubts no longer forget it
    for _ in range(DOUBTS):
        cap.update(0.05, delivered=0.95 * cap.cap, sent=cap.cap)
    assert not cap.bound and cap.forgotten == 2  # six did
    for _ in range(REFOUND + 1):
        cap.update(0.0, delivered=cap.cap, sent=cap.cap)  # a while without an overflow
    bound_then_doubted(2 * DOUBTS)
    assert not cap.bound and cap.forgotten == 3  # not found again soon: no more than before


def test_a_narrow_link_stays_bound_while_its_queue_drains_and_after() -> None:
    """A real overflow: under the link nothing more is lost but a stray report of a few percent (the queue's
    last drops, a keyframe's burst), which does not make it random loss."""
    cap = LossBasedCap(2_000_000)
    cap.update(0.5, delivered=600_000, sent=1_200_000)
    for lost in (0.04, 0.03, 0.0, 0.05, 0.0, 0.0, 0.03, 0.04, 0.0):
        cap.update(lost, delivered=cap.cap * (1 - lost), sent=cap.cap)
        assert cap.bound and cap.link is not None and cap.cap <= MARGIN * 600_000, lost
    cap.update(0.04, delivered=595_000, sent=620_000)  # and beyond it, its loss again
    assert cap.bound and cap.cap == int(MARGIN * 595_000)
    assert (cap.overflows, cap.forgotten) == (2, 0)


def test_the_resend_budget_lets_a_burst_through_then_refills_with_time() -> None:
    now = [0.0]
    sent: list[int] = []

    async def retransmit(sequence: int) -> None:
        sent.append(sequence)

    budget = ResendBudget(retransmit, lambda: 48_000.0, lambda: now[0])  # bytes/s: 40 packets of 1200
    allowed = [budget.allows() for _ in range(20)]
    assert allowed.count(True) == 10  # a quarter of a second's worth at once
    assert budget.refused == 10
    now[0] = 0.5
    assert [budget.allows() for _ in range(25)].count(True) == 10  # refilled, up to the burst again


class _Sender:
    """What a Follower sees of a sender: its transport's totals and its media's."""

    def __init__(self) -> None:
        self.wire, self.media, self.seq = [0, 0], [0, 0], 999

    def send(self, packets: int, size: int = 1200) -> None:
        self.wire[0] += packets
        self.wire[1] += packets * (size + 40)
        self.media[0] += packets
        self.media[1] += packets * size
        self.seq = (self.seq + packets) & 0xFFFF


def _report(highest: int, lost: int, fraction: float) -> RtcpReceiverInfo:
    return RtcpReceiverInfo(
        ssrc=1, fraction_lost=int(fraction * 256), packets_lost=lost, highest_sequence=highest, jitter=0, lsr=0, dlsr=0
    )


def _streaming(looks: int) -> tuple[Vp8Encoder, Resender, Follower, _Sender, int]:
    """A Follower of a 2 Mb/s encoder with its Resender, after `looks` looks 0.05 s apart at a sender that
    sent 10 packets between each (200 a second); returns them, the sender and its first sequence number."""
    now = [0.0]
    encoder = Vp8Encoder(2_000_000)

    async def retransmit(sequence: int) -> None:
        pass

    resender = Resender(retransmit, lambda: 0.1, clock=lambda: now[0], later=lambda *args: None)
    follower = Follower(encoder, resender, clock=lambda: now[0])
    sender = _Sender()
    sender.send(10)
    follower.look((sender.wire[0], sender.wire[1]), (sender.media[0], sender.media[1]), sender.seq)
    first = (sender.seq - 9) & 0xFFFF
    for _ in range(looks):
        now[0] += 0.05
        sender.send(10)
        follower.look((sender.wire[0], sender.wire[1]), (sender.media[0], sender.media[1]), None)
    return encoder, resender, follower, sender, first


async def test_a_follower_brings_the_encoder_under_a_narrow_link_at_the_first_report() -> None:
    """2 Mb/s (about 200 packets a second) into a link that carries 600 kb/s: the first report (0.8 s in)
    shows a third of it through, before any loss; the encoder's target comes under the link at once."""
    encoder, resender, follower, sender, first = _streaming(looks=16)  # 0.8 s
    received = 48  # 600 kb/s for 0.8 s, at 1240 bytes a packet
    follower.report(_report((first + received - 1) & 0xFFFF, 0, 0.0), (sender.media[0], sender.media[1]))
    assert 0.7 * 600_000 < encoder.target_bitrate < 600_000
    assert encoder.link_bound
    stats = totals([follower])  # as GET /sessions/{id} shows them
    assert stats["link_overflows"] == 1 and stats["links_forgotten"] == 0, stats
    assert stats["bitrate_cap_kbps"] is not None and 0.7 * 600 < stats["bitrate_cap_kbps"] < 600, stats
    assert totals([])["bitrate_cap_kbps"] is None
    assert resender.copies == 3  # nothing lost yet: three copies of what is NACKed
    follower.report(_report((first + received + 40) & 0xFFFF, 60, 0.6), (sender.media[0], sender.media[1]))
    assert resender.copies == 1  # 60% lost: one copy
    assert follower.resend_rate() < 0.2 * 600_000 / 8


async def test_a_long_burst_of_random_loss_keeps_fec_and_both_resend_copies() -> None:
    """A second of 5% bursty loss reports 10-20% now and then: the cap steps back, but nothing overflowed,
    so FEC stays on and NACKed packets still go three times (they were what kept such bursts from freezing)."""
    encoder, resender, follower, sender, first = _streaming(looks=20)  # 1 s, 14% of it lost
    follower.report(_report((first + 199) & 0xFFFF, 28, 0.14), (sender.media[0], sender.media[1]))
    assert encoder.limit < encoder.ceiling  # a step back, as libwebrtc's loss-based controller takes
    assert not encoder.link_bound and resender.copies == 3 and not follower.congested


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


async def test_the_report_hooks_land_where_aiortc_keeps_what_they_read() -> None:
    pc = RTCPeerConnection()
    sender = pc.addTrack(VideoStreamTrack())
    try:
        assert aiortc_hooks.sent(sender) == (0, 0)
        assert hasattr(sender, "_RTCRtpSender__packet_count") and hasattr(sender, "_RTCRtpSender__octet_count")
        assert aiortc_hooks.newest_sequence(sender) is None
        history = sender._RTCRtpSender__rtp_history  # type: ignore[attr-defined]
        assert isinstance(history, dict)

        class Packet:
            def __init__(self, sequence_number: int) -> None:
                self.sequence_number = sequence_number

        for number in (65534, 65535, 0, 1):  # across the wrap
            history[number % 128] = Packet(number)
        assert aiortc_hooks.newest_sequence(sender) == 1
        told: list[RtcpReceiverInfo] = []
        aiortc_hooks.on_receiver_reports(sender, told.append)
        block = _report(5, 0, 0.0)
        block.ssrc = sender._ssrc
        await sender._handle_rtcp_packet(RtcpRrPacket(ssrc=7, reports=[block, _report(6, 0, 0.0)]))
        assert told == [block]  # only the block about this sender's stream
    finally:
        await pc.close()
