"""Data-channel messages (`server.rtc.messages`): the flood guard's token bucket, on a clock the test moves, and
what a peer's message becomes (a config change, or the refusal it is answered with)."""

from __future__ import annotations

import json

import pytest

from server.rtc import messages
from server.rtc.errors import RequestError
from server.rtc.inputs import MAX_MESSAGE_BYTES
from server.rtc.messages import MESSAGE_BURST, MESSAGE_RATE, TokenBucket, parse_message
from server.web.errors import status_of

pytestmark = pytest.mark.unit


class Clock:
    """`time` as the bucket sees it: seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(messages, "time", clock)
    return clock


def _taken(bucket: TokenBucket, count: int) -> int:
    return sum(bucket.take() for _ in range(count))


# --- TokenBucket ------------------------------------------------------------------------------------------


def test_a_burst_passes_then_the_rest_is_refused(clock: Clock) -> None:
    bucket = TokenBucket(rate=20.0, burst=40)
    assert [bucket.take() for _ in range(41)] == [True] * 40 + [False]
    assert _taken(bucket, 100) == 0  # no time passed: nothing more


def test_tokens_come_back_at_the_rate(clock: Clock) -> None:
    bucket = TokenBucket(rate=20.0, burst=40)
    _taken(bucket, 40)
    clock.now += 0.5  # 10 tokens' worth
    assert _taken(bucket, 20) == 10
    clock.now += 0.04  # not yet one whole token
    assert not bucket.take()
    clock.now += 0.011
    assert bucket.take()


def test_an_idle_bucket_holds_no_more_than_its_burst(clock: Clock) -> None:
    bucket = TokenBucket(rate=20.0, burst=40)
    clock.now += 3600
    assert _taken(bucket, 100) == 40


def test_a_steady_sender_at_the_rate_is_never_refused(clock: Clock) -> None:
    bucket = TokenBucket(MESSAGE_RATE, MESSAGE_BURST)
    for _ in range(1000):  # 50 s of messages at the allowed rate
        assert bucket.take()
        clock.now += 1.0 / MESSAGE_RATE
    # Twice the rate: the burst carries it a while, then half are refused.
    taken = 0
    for _ in range(1000):
        taken += bucket.take()
        clock.now += 0.5 / MESSAGE_RATE
    assert MESSAGE_BURST + 490 <= taken <= MESSAGE_BURST + 510


def test_a_flood_is_reported_once_per_run_of_refusals(clock: Clock) -> None:
    bucket = TokenBucket(rate=1.0, burst=2)
    _taken(bucket, 2)
    reports = [bucket.report_once() for _ in range(5) if not bucket.take()]
    assert reports == [True, False, False, False, False]
    clock.now += 1.0
    assert bucket.take()  # a message got through: the next flood is a new one
    assert not bucket.take() and bucket.report_once() and not bucket.report_once()


# --- parse_message ----------------------------------------------------------------------------------------


def test_a_config_change_in_either_shape() -> None:
    assert parse_message('{"type": "config", "config": {"color": "#ff0000"}}').changes() == {"color": "#ff0000"}
    assert parse_message('{"type": "config", "mode": "blur", "blur": 0.3}').changes() == {"mode": "blur", "blur": 0.3}
    assert parse_message('{"mode": "none"}').changes() == {"mode": "none"}  # "type" may be left out
    assert parse_message("{}").changes() == {}


def _refusal(message: object) -> tuple[int, str | None]:
    with pytest.raises(RequestError) as caught:
        parse_message(message)
    assert caught.value.message
    return status_of(caught.value), caught.value.field


@pytest.mark.parametrize(
    ("message", "status", "field"),
    [
        (b'{"type": "config"}', 415, None),  # binary frames
        ("not json", 400, "message"),
        ("[1, 2]", 400, None),
        ('"config"', 400, None),
        ('{"type": "stats"}', 400, "type"),
        ('{"type": {"a": 1}}', 400, "type"),
        ('{"type": "config", "config": [1, 2]}', 400, "config"),
        ('{"type": "config", "config": "blur"}', 400, "config"),
        ("[" * 5000 + "]" * 5000, 400, "message"),
    ],
)
def test_what_is_not_a_config_change_is_refused(message: object, status: int, field: str | None) -> None:
    assert _refusal(message) == (status, field)


def test_a_message_is_at_most_16_kib() -> None:
    padding = MAX_MESSAGE_BYTES - len(json.dumps({"type": "config", "x": ""}))
    assert parse_message(json.dumps({"type": "config", "x": "a" * padding})).changes() == {"x": "a" * padding}
    assert _refusal(json.dumps({"type": "config", "x": "a" * (padding + 1)})) == (413, "message")
