"""SIGTERM drains `backdrop serve`: new offers and /healthz get 503, live sessions run on, then exit 0."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import numpy as np
import pytest

from server.tools.client import Peer
from server.tools.loadtest import free_port

from conftest import open_session

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("weights")]


@asynccontextmanager
async def serving(*flags: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-compile", *flags,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 120
            while True:
                try:
                    async with http.get(f"{url}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert server.returncode is None and time.monotonic() < deadline, "the server did not start"
                await asyncio.sleep(0.3)
        yield server, url
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()


BLUE = {"mode": "color", "color": "#0000ff"}


async def test_sigterm_drains_then_exits_cleanly(frames: list[np.ndarray]) -> None:
    async with serving("--drain-timeout", "60") as (server, url), aiohttp.ClientSession() as http:
        live = Peer(frames)
        answer = await open_session(http, live, BLUE, f"{url}/offer")
        await live.frames(5)
        server.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        async with http.get(f"{url}/healthz") as response:
            assert response.status == 503 and (await response.json())["status"] == "draining"
        late = Peer(frames)
        body = {"sdp": await late.offer(), "type": "offer", "config": BLUE}
        async with http.post(f"{url}/offer", json=body) as response:
            refused = await response.json()
            assert response.status == 503 and "draining" in refused["error"], refused
        await late.close()
        # The live session keeps its video: fresh frames with the session's blue background.
        for frame in await live.frames(15):
            assert np.abs(frame[:40, :40].astype(int) - (0, 0, 255)).mean() < 25
        async with http.delete(f"{url}/sessions/{answer['session_id']}") as response:
            assert response.status == 204
        await live.close()
        assert await asyncio.wait_for(server.wait(), 30) == 0


async def test_the_drain_timeout_closes_what_is_left_and_a_second_sigterm_stops_at_once(
    frames: list[np.ndarray],
) -> None:
    async with serving("--drain-timeout", "2") as (server, url), aiohttp.ClientSession() as http:
        peer = Peer(frames)
        await open_session(http, peer, BLUE, f"{url}/offer")
        await peer.frames(3)
        start = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 30) == 0
        assert 1.5 < time.monotonic() - start < 20
        await peer.close()
    async with serving("--drain-timeout", "600") as (server, url), aiohttp.ClientSession() as http:
        peer = Peer(frames)
        await open_session(http, peer, BLUE, f"{url}/offer")
        await peer.frames(3)
        server.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 30) == 0
        await peer.close()
