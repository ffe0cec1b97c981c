"""Data-channel messages, typed: what a peer may send and what the server answers."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import Malformed, WrongType
from .inputs import MAX_MESSAGE_BYTES, parse_json


class ConfigChange(BaseModel):
    """`{"type": "config", "config": {...}}`; the fields may also stand beside "type" instead of in "config"."""

    model_config = ConfigDict(extra="allow")

    type: Literal["config"] = "config"
    config: dict[str, Any] | None = None

    def changes(self) -> dict[str, Any]:
        return self.config if self.config is not None else dict(self.model_extra or {})


class ConfigReply(BaseModel):
    type: Literal["config"] = "config"
    config: dict[str, Any]


class ErrorReply(BaseModel):
    type: Literal["error"] = "error"
    error: str
    field: str | None = None


class StatsMessage(BaseModel):
    """About once a second: the session's counters and processing times (see rtc.stats)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["stats"] = "stats"


MESSAGE_RATE = 20.0  # config changes per second a session may send, on average
MESSAGE_BURST = 40  # and at once


class TokenBucket:
    """`rate` events a second on average, `burst` at once; the rest refused (a data channel's flood guard)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._tokens, self._last = float(burst), time.monotonic()
        self._reported = False

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        self._reported = False
        return True

    def report_once(self) -> bool:
        """True for the first refusal of a run of them: one error reply per flood, not one per message."""
        first, self._reported = not self._reported, True
        return first


def parse_message(message: object) -> ConfigChange:
    """A peer's message as a typed request, or a RequestError (at most MAX_MESSAGE_BYTES of JSON text)."""
    if not isinstance(message, str):
        raise WrongType("messages must be JSON text, not binary", None)
    data = parse_json(message, "message", MAX_MESSAGE_BYTES)
    if not isinstance(data, dict):
        raise Malformed("messages must be JSON objects", None)
    if data.get("type", "config") != "config":
        raise Malformed(f"unknown message type {str(data.get('type'))[:40]!r}", "type")
    try:
        return ConfigChange.model_validate(data)
    except ValidationError:
        raise Malformed("config must be a JSON object", "config") from None


def encode(reply: BaseModel) -> str:
    return reply.model_dump_json()
