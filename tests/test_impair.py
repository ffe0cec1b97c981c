"""The user-space impaired link: loss in bursts at the rate asked, delay and jitter within bounds, a narrow
link that holds its rate and drops what its queue cannot hold, STUN/DTLS untouched, one seed one outcome."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from server.tools.impair import Impairment, Link

pytestmark = pytest.mark.unit

RTP = bytes([0x80, 96]) + bytes(1198)  # a 1,200-byte media packet (version 2)
STUN = bytes([0x00, 0x01]) + bytes(98)


def _outcomes(impairment: Impairment, count: int, seed: int = 1, gap_s: float = 0.0) -> list[float | None]:
    link = Link(impairment, deliver=lambda packet: None, seed=seed)
    return [link.offer(RTP, i * gap_s) for i in range(count)]


def _runs(lost: list[bool]) -> list[int]:
    runs, current = [], 0
    for flag in lost:
        if flag:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


@pytest.mark.parametrize("burst", [1.0, 4.0])
def test_loss_comes_at_the_rate_asked_in_runs_of_the_length_asked(burst: float) -> None:
    lost = [at is None for at in _outcomes(Impairment(loss=0.05, burst=burst), 200_000)]
    assert sum(lost) / len(lost) == pytest.approx(0.05, rel=0.08)
    runs = _runs(lost)
    assert sum(runs) / len(runs) == pytest.approx(burst, rel=0.08)


def test_one_seed_one_outcome_another_seed_another() -> None:
    impairment = Impairment(loss=0.1, burst=2, delay_ms=40, jitter_ms=10)
    assert _outcomes(impairment, 500, seed=7) == _outcomes(impairment, 500, seed=7)
    assert _outcomes(impairment, 500, seed=7) != _outcomes(impairment, 500, seed=8)


def test_delay_and_jitter_stay_in_bounds_and_reorder() -> None:
    times = _outcomes(Impairment(delay_ms=40, jitter_ms=10), 2_000, gap_s=0.001)
    delays = [at - i * 0.001 for i, at in enumerate(times) if at is not None]
    assert len(delays) == 2_000
    assert min(delays) >= 0.030 - 1e-9 and max(delays) <= 0.050 + 1e-9
    assert sum(delays) / len(delays) == pytest.approx(0.040, abs=0.001)
    assert any(later < earlier for earlier, later in itertools.pairwise(times))  # packets reorder


def test_a_narrow_link_holds_its_rate_and_drops_what_its_queue_cannot_hold() -> None:
    # 2 Mb/s offered (1,200 bytes every 4.8 ms) into 600 kb/s with a 200 ms queue, for 10 s.
    impairment = Impairment(rate_kbps=600, queue_ms=200)
    link = Link(impairment, deliver=lambda packet: None)
    times = [link.offer(RTP, i * 0.0048) for i in range(2_084)]
    out = [(i, at) for i, at in enumerate(times) if at is not None]
    rate = len(out) * len(RTP) * 8 / (out[-1][1] - out[0][1])
    assert rate == pytest.approx(600_000, rel=0.02)
    assert link.counters.queue_drops > 0 and link.counters.lost == 0
    assert max(at - i * 0.0048 for i, at in out) <= 0.200 + len(RTP) * 8 / 600_000 + 1e-9  # bounded queueing


def test_stun_and_dtls_pass_untouched_unless_asked() -> None:
    link = Link(Impairment(loss=0.5, burst=2, delay_ms=100), deliver=lambda packet: None)
    assert all(link.offer(STUN, 1.0) == 1.0 for _ in range(200))
    everything = Link(Impairment(loss=0.5, burst=2, media_only=False), deliver=lambda packet: None)
    assert any(everything.offer(STUN, 1.0) is None for _ in range(200))


async def test_a_link_delivers_what_passes_in_time() -> None:
    got: list[tuple[float, bytes]] = []
    loop = asyncio.get_running_loop()
    link = Link(Impairment(delay_ms=30), deliver=lambda packet: got.append((loop.time(), packet)))
    start = loop.time()
    link.send(RTP)
    link.send(STUN)
    await asyncio.sleep(0.1)
    assert [packet for _, packet in got] == [STUN, RTP]  # media waited its delay, STUN did not
    assert got[1][0] - start >= 0.03


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", Impairment()),
        ("loss=5%,burst=3", Impairment(loss=0.05, burst=3)),
        ("loss=0.02, delay=40ms, jitter=10ms", Impairment(loss=0.02, delay_ms=40, jitter_ms=10)),
        ("rate=600kbps,queue=0.1s", Impairment(rate_kbps=600, queue_ms=100)),
        ("rate=1.5mbps", Impairment(rate_kbps=1500)),
    ],
)
def test_specs_parse(spec: str, expected: Impairment) -> None:
    assert Impairment.parse(spec) == expected


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("loss=5", "percentage"),
        ("los=5%", "expected one of"),
        ("loss=100%", "loss must be"),
        ("delay=10ms,jitter=20ms", "jitter"),
        ("burst=0.5", "burst"),
        ("rate=0", "rate must be positive"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Impairment.parse(spec)
