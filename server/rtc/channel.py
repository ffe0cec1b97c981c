"""A session's data channel: config changes in (rate limited), the applied config or an error back, and
the session's stats once a second."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiortc import RTCDataChannel

from ..pipeline.config import SessionConfig
from .errors import RequestError
from .messages import MESSAGE_RATE, ConfigReply, ErrorReply, StatsMessage, TokenBucket, encode, parse_message
from .stats import StreamStats

log = logging.getLogger(__name__)
Update = Callable[[dict], SessionConfig]  # applies a change (or raises RequestError), returns the new config


def reply_to(message: object, update: Update) -> str:
    """Handle one message; the reply (JSON) is the applied config or an error naming the field at fault."""
    try:
        config = update(parse_message(message).changes())
    except RequestError as exc:
        return encode(ErrorReply(error=exc.message, field=exc.field))
    return encode(ConfigReply(config=config.model_dump()))


def attach(
    channel: RTCDataChannel,
    bucket: TokenBucket,
    update: Update,
    stats: Callable[[], StreamStats | None],
    label: str,
) -> asyncio.Task:
    """Serve `channel`: replies to its messages within `bucket`'s rate; returns the task sending stats."""

    @channel.on("message")
    def on_message(message: object) -> None:
        # Runs inside aiortc's receive loop: whatever the message holds, nothing may escape.
        try:
            if bucket.take():
                reply = reply_to(message, update)
            elif bucket.report_once():
                reply = encode(ErrorReply(error=f"more than {MESSAGE_RATE:g} messages a second; dropped"))
            else:
                return
            if channel.readyState == "open":
                channel.send(reply)
        except Exception:
            log.exception("session %s: data-channel message not handled", label)

    return asyncio.ensure_future(send_stats(channel, stats))


async def send_stats(channel: RTCDataChannel, stats: Callable[[], StreamStats | None], every: float = 1.0) -> None:
    """The session's stats on `channel` every `every` seconds, until the channel closes."""
    while True:
        await asyncio.sleep(every)
        current = stats()
        if channel.readyState == "open" and current is not None:
            channel.send(encode(StatsMessage(**current.snapshot())))
        elif channel.readyState == "closed":
            return
