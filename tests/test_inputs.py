"""The one boundary for untrusted input (`server.rtc.inputs`): bytes become checked values, or a refusal whose
kind gives the HTTP status (`server.web.errors.status_of`), with the message and field a client is answered with."""

from __future__ import annotations

import pytest

from server.pipeline.config import SessionConfig
from server.rtc.errors import RequestError
from server.rtc.inputs import MAX_JSON_DEPTH, decode_text, parse_json, validated
from server.web.errors import status_of

pytestmark = pytest.mark.unit


def _refused(call, *args, **kwargs) -> RequestError:  # type: ignore[no-untyped-def]
    with pytest.raises(RequestError) as caught:
        call(*args, **kwargs)
    assert caught.value.message and str(caught.value) == caught.value.message
    return caught.value


# --- decode_text ----------------------------------------------------------------------------------------


def test_utf8_text_is_decoded() -> None:
    assert decode_text("v=0\r\nö ✓".encode(), "sdp") == "v=0\r\nö ✓"
    assert decode_text(b"", "sdp") == ""


def test_bytes_that_are_not_utf8_are_refused_with_where() -> None:
    error = _refused(decode_text, b"v=0\r\n\xff\xfe", "sdp")
    assert (status_of(error), error.field) == (400, "sdp")
    assert "UTF-8" in error.message and "byte 5" in error.message
    assert _refused(decode_text, "é".encode("latin-1"), "body").field == "body"


def test_a_nul_character_is_refused() -> None:
    error = _refused(decode_text, b"v=0\x00", "sdp")
    assert (status_of(error), error.field) == (400, "sdp") and "NUL" in error.message


# --- parse_json -------------------------------------------------------------------------------------------


def test_json_text_and_bytes_parse_alike() -> None:
    document = '{"type": "offer", "config": {"blur": 0.5, "name": "ö"}}'
    expected = {"type": "offer", "config": {"blur": 0.5, "name": "ö"}}
    assert parse_json(document) == parse_json(document.encode()) == expected
    assert parse_json(b"[1, null, true]") == [1, None, True]


@pytest.mark.parametrize("data", [b"{nope", b"", b"{'a': 1}", b'{"a": 1} trailing', "[1, 2"])
def test_what_is_not_json_is_a_400_naming_the_field(data: bytes | str) -> None:
    error = _refused(parse_json, data, "message")
    assert (status_of(error), error.field) == (400, "message") and "not valid JSON" in error.message


def test_bytes_that_are_not_utf8_are_not_json() -> None:
    error = _refused(parse_json, b'{"a": "\xff"}')
    assert (status_of(error), error.field) == (400, "body") and "UTF-8" in error.message


def test_the_size_limit_counts_utf8_bytes() -> None:
    assert parse_json(b'"' + b"x" * 8 + b'"', limit=10) == "x" * 8  # exactly at the limit
    error = _refused(parse_json, b'"' + b"x" * 9 + b'"', "message", limit=10)
    assert (status_of(error), error.field) == (413, "message")
    assert "11 bytes" in error.message and "10" in error.message
    # Five characters, ten bytes: text is measured as the bytes it would be.
    assert status_of(_refused(parse_json, '"' + "é" * 4 + '"', limit=9)) == 413
    assert parse_json('"' + "é" * 4 + '"', limit=10) == "éééé"
    # A lone surrogate (what a data channel may hand over) is measured, not a crash.
    assert status_of(_refused(parse_json, "\ud800" * 10, limit=5)) == 413


def _nested(depth: int, kind: str = "list") -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_nesting_is_limited(kind: str) -> None:
    assert parse_json(_nested(MAX_JSON_DEPTH, kind)) is not None
    error = _refused(parse_json, _nested(MAX_JSON_DEPTH + 1, kind), "body")
    assert (status_of(error), error.field) == (400, "body") and "nested deeper" in error.message
    # Far past the parser's own recursion limit: still a 400, not a crash.
    deep = _refused(parse_json, _nested(100_000, kind))
    assert status_of(deep) == 400 and "nested deeper" in deep.message


def test_a_mixed_nesting_is_counted_level_by_level() -> None:
    value = {"a": [{"b": [[1]]}]}  # four levels
    assert parse_json('{"a": [{"b": [[1]]}]}') == value
    wide = "[" + ", ".join([_nested(MAX_JSON_DEPTH - 1)] * 50) + "]"  # wide, not deep: allowed
    assert len(parse_json(wide)) == 50
    assert status_of(_refused(parse_json, "[1, " + _nested(MAX_JSON_DEPTH) + "]")) == 400


# --- validated --------------------------------------------------------------------------------------------


def test_a_valid_object_becomes_the_model() -> None:
    config = validated(SessionConfig, {"mode": "color", "color": "#FF0000"}, "config")
    assert isinstance(config, SessionConfig) and (config.mode, config.color) == ("color", "#ff0000")
    assert validated(SessionConfig, {}) == SessionConfig()


@pytest.mark.parametrize("value", [[1, 2], "config", None, 3])
def test_what_is_not_an_object_is_a_400(value: object) -> None:
    error = _refused(validated, SessionConfig, value, "config")
    assert (status_of(error), error.field) == (400, "config") and "must be a JSON object" in error.message
    whole = _refused(validated, SessionConfig, value)
    assert (status_of(whole), whole.field) == (400, None) and whole.message.startswith("body ")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"blur": "lots"}, "blur"),
        ({"blur": 1.5}, "blur"),
        ({"color": "red"}, "color"),
        ({"mode": "sepia"}, "mode"),
        ({"colour": "#ffffff"}, "colour"),  # unknown fields are refused by name
        ({"mode": "color", "smoothing": -1}, "smoothing"),
    ],
)
def test_an_invalid_field_is_a_422_naming_it(changes: dict, field: str) -> None:
    error = _refused(validated, SessionConfig, changes, "config")
    assert (status_of(error), error.field) == (422, f"config.{field}")
    assert error.message.startswith(f"{field}: ")
    whole = _refused(validated, SessionConfig, changes)  # a whole body: the field's own name
    assert (status_of(whole), whole.field) == (422, field)
