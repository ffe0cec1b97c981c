"""HAProxy's agent-check: this process's free capacity, so that a proxy sends new offers where there is room.

HAProxy connects to the agent port every interval and reads one line: `up 60%` (its weight for this
process: the share of session slots still free), or `drain` while the process drains (its sessions are
still reachable through their own routes; no new offers come).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from ..rtc.sessions import SessionManager
from .keys import SESSIONS, SETTINGS


def agent_reply(sessions: SessionManager) -> str:
    if sessions.draining:
        return "drain\n"
    limit = sessions.policy.max_sessions
    free = max(limit - len(sessions.sessions), 0)
    return f"up {round(100 * free / limit)}%\n"


async def agent(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context: the agent on --agent-port while the app runs (nothing without one)."""
    port = app[SETTINGS].agent_port
    if port is None:
        yield
        return

    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(agent_reply(app[SESSIONS]).encode())
        try:
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(answer, app[SETTINGS].host, port)
    yield
    server.close()
    await server.wait_closed()
