"""Data-channel messages, typed: what a peer may send and what the server answers."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError


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


class MessageError(ValueError):
    """A message that is not one the server understands; `field` names the offending key."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def parse_message(message: object) -> ConfigChange:
    """A peer's message as a typed request, or MessageError."""
    try:
        data = json.loads(message) if isinstance(message, str) else None
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser goes
        data = None
    if not isinstance(data, dict):
        raise MessageError("messages must be JSON objects")
    if data.get("type", "config") != "config":
        raise MessageError(f"unknown message type {data.get('type')!r}", "type")
    try:
        return ConfigChange.model_validate(data)
    except ValidationError:
        raise MessageError("config must be a JSON object", "config") from None


def encode(reply: BaseModel) -> str:
    return reply.model_dump_json(exclude_none=False)
