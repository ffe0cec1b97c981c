"""What the server resends for a NACK (server/rtc/resend.py): each NACKed packet three times, a fifth of a
round trip apart, and nothing more for a request that came before the first copy could arrive."""

from __future__ import annotations

import asyncio

import pytest

from server.rtc.resend import Resender

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def resender(clock: Clock, rtt: float | None = 0.08) -> tuple[Resender, list[int], list[tuple[float, int]]]:
    sent: list[int] = []
    scheduled: list[tuple[float, int]] = []

    async def retransmit(sequence: int) -> None:
        sent.append(sequence)

    def later(delay: float, callback: object, sequence: int) -> None:
        scheduled.append((delay, sequence))

    return Resender(retransmit, lambda: rtt, clock, later), sent, scheduled


def test_each_nacked_packet_is_resent_at_once_and_twice_more_a_fifth_of_a_round_trip_apart() -> None:
    clock = Clock()
    resend, sent, scheduled = resender(clock)

    async def nack_then_wait() -> None:
        await resend(7)
        assert sent == [7] and scheduled == [(pytest.approx(0.016), 7), (pytest.approx(0.032), 7)]
        resend._again(7)  # the further copies, when their time comes
        resend._again(7)
        await asyncio.sleep(0)

    asyncio.run(nack_then_wait())
    assert sent == [7, 7, 7] and resend.answered == 1


def test_a_request_before_the_copies_could_arrive_is_not_answered_again() -> None:
    clock = Clock()
    resend, sent, scheduled = resender(clock)
    asyncio.run(resend(7))
    clock.now += 0.03  # the receiver's echoes of the same request, within three spacings (48 ms)
    asyncio.run(resend(7))
    clock.now += 0.015
    asyncio.run(resend(7))
    assert sent == [7] and len(scheduled) == 2 and resend.ignored == 2
    clock.now += 0.09  # a retry a round trip later: every copy was lost
    asyncio.run(resend(7))
    assert sent == [7, 7] and len(scheduled) == 4


def test_spacing_stays_within_10_to_30_ms() -> None:
    clock = Clock()
    assert resender(clock, rtt=0.005)[0].spacing() == pytest.approx(0.01)
    assert resender(clock, rtt=0.5)[0].spacing() == pytest.approx(0.03)
    assert resender(clock, rtt=None)[0].spacing() == pytest.approx(0.02)  # no round trip measured yet: 100 ms


def test_it_remembers_a_bounded_number_of_packets() -> None:
    clock = Clock()
    resend = resender(clock)[0]
    for sequence in range(2000):
        assert resend.due(sequence)
    assert len(resend.resent) == 512 and 1999 in resend.resent and 0 not in resend.resent


def test_one_copy_while_the_link_is_congested() -> None:
    """Above 10% reported loss (congestion.follow_losses) a narrow link's queue is overflowing: a second copy
    of each retransmission would only add to it."""
    clock = Clock()
    resend, sent, scheduled = resender(clock)
    resend.copies = 1
    asyncio.run(resend(7))
    assert sent == [7] and scheduled == []


def test_a_request_for_a_packet_not_sent_yet_is_passed_over_and_answered_once_it_is() -> None:
    """After a silence a receiver asks for what should have come: a packet the sender has not sent yet is not
    resent, and not noted either, so that the request that comes once it is sent (and lost) is answered."""
    clock = Clock()
    sent_so_far = {5, 6}
    resend, sent, _ = resender(clock)
    resend.holds = sent_so_far.__contains__
    asyncio.run(resend(6))
    asyncio.run(resend(7))  # not sent yet
    assert sent == [6] and resend.answered == 1
    sent_so_far.add(7)
    clock.now += 0.01  # sent now, lost; asked for again 10 ms later
    asyncio.run(resend(7))
    assert sent == [6, 7] and resend.answered == 2
