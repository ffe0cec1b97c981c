"""`serve --processes 2` behind a real HAProxy (`backdrop proxy-config`): one origin, sessions on both
processes, each session's requests reaching its process, a killed process restarted alone."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from server.tools.client import Peer
from server.tools.loadtest import wait_healthy

from conftest import open_session

pytestmark = [
    pytest.mark.proxy,
    pytest.mark.usefixtures("weights"),
    pytest.mark.skipif(sys.platform != "linux", reason="the supervisor's tests use Linux signals"),
]


def _free_block(size: int) -> int:
    """A port whose next `size` ports are free too (the proxy's and the processes')."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + size > 65535:
            continue
        try:
            for port in range(base, base + size + 1):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free block of ports")


async def _shows(peer: Peer, rgb: tuple[int, int, int], wait_s: float = 15.0) -> bool:
    """Whether the returned video's background (its top-left corner) turns `rgb` within `wait_s` (the
    client's queue may hold older frames)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        frame = (await peer.frames(1))[-1]
        if np.abs(frame[:40, :40].reshape(-1, 3).mean(axis=0) - rgb).mean() < 25:
            return True
    return False


async def test_two_processes_behind_haproxy(tmp_path: Path, frames: list[np.ndarray]) -> None:
    port = _free_block(4)
    # The supervisor runs the HAProxy that `backdrop proxy-config` configures (as in the container).
    supervisor = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "serve", "--processes", "2", "--port", str(port), "--no-compile",
        "--host", "127.0.0.1", "--proxy", "haproxy", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    pids: dict[int, list[int]] = {1: [], 2: []}

    async def read_pids() -> None:
        assert supervisor.stdout is not None
        async for line in supervisor.stdout:
            found = re.match(rb"process (\d+) pid (\d+)", line)
            if found:
                pids[int(found[1])].append(int(found[2]))

    reader = asyncio.get_running_loop().create_task(read_pids())
    url = f"http://127.0.0.1:{port}"
    peers: list[Peer] = []
    try:
        async with aiohttp.ClientSession() as http:
            share = max(1, len(os.sched_getaffinity(0)) // 2)
            for n in (1, 2):  # both processes up, each using its share of the cores, and the proxy seeing them
                health = await wait_healthy(f"http://127.0.0.1:{port + 2 * n - 1}")
                assert health["workers"] * health["torch_threads"] <= share, health
            await asyncio.sleep(2.5)  # the proxy's checks run every second
            await wait_healthy(url)

            # Four sessions through the one origin land on both processes.
            resources: list[str] = []
            for _ in range(4):
                peer = Peer(frames)
                peers.append(peer)
                answer = await open_session(http, peer, {"mode": "color", "color": "#0000ff"}, f"{url}/offer")
                resources.append(answer["resource"])
            routes = [re.match(r"^/w/(\d)/sessions/[\w-]+$", r) for r in resources]
            assert all(routes), resources
            assert {int(r[1]) for r in routes if r} == {1, 2}, resources

            # Each session's own requests reach its process: GET, and a PATCH that the returned pixels show.
            for peer, resource in zip(peers, resources, strict=True):
                assert await _shows(peer, (0, 0, 255))
                async with http.get(f"{url}{resource}") as response:
                    assert response.status == 200 and (await response.json())["resource"] == resource
                other = re.sub(r"^/w/(\d)", lambda m: f"/w/{3 - int(m[1])}", resource)
                async with http.get(f"{url}{other}") as response:
                    assert response.status == 404  # the other process knows nothing of it
                async with http.patch(f"{url}{resource}", json={"color": "#ff0000"}) as response:
                    assert response.status == 200, await response.text()
                assert await _shows(peer, (255, 0, 0))

            # Killing process 1 ends its sessions only; the supervisor starts it again; offers work.
            killed = pids[1][-1]
            os.kill(killed, signal.SIGKILL)
            for peer, resource in zip(peers, resources, strict=True):
                if resource.startswith("/w/2/"):  # untouched: still live, still changing on request
                    async with http.patch(f"{url}{resource}", json={"color": "#ffffff"}) as response:
                        assert response.status == 200, await response.text()
                    assert await _shows(peer, (255, 255, 255))
            deadline = time.monotonic() + 120
            while len(pids[1]) < 2 or pids[1][-1] == killed:
                assert time.monotonic() < deadline, "process 1 was not started again"
                await asyncio.sleep(0.3)
            await wait_healthy(f"http://127.0.0.1:{port + 1}")
            await asyncio.sleep(2.5)
            for resource in resources:
                if resource.startswith("/w/1/"):  # ended with its process
                    async with http.get(f"{url}{resource}") as response:
                        assert response.status == 404
            for _ in range(2):
                peer = Peer(frames)
                peers.append(peer)
                await open_session(http, peer, {"mode": "color", "color": "#00ff00"}, f"{url}/offer")
                assert await _shows(peer, (0, 255, 0))
    finally:
        for peer in peers:
            await peer.close()
        if supervisor.returncode is None:
            supervisor.send_signal(signal.SIGTERM)
            supervisor.send_signal(signal.SIGTERM)  # the second: stop at once
        code = await asyncio.wait_for(supervisor.wait(), 60)
        reader.cancel()
    assert code == 0  # every process, the restarted one too, stopped cleanly
    with contextlib.suppress(OSError):  # the supervisor stopped its HAProxy with it
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        pytest.fail("HAProxy still listens after the supervisor stopped")


async def test_proxy_config_is_valid_haproxy(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    made = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "proxy-config", "--processes", "3", "--port", "8080", "--output", str(config)
    )
    assert await asyncio.wait_for(made.wait(), 60) == 0
    text = config.read_text()
    assert "bind 0.0.0.0:8080" in text and "use_backend process_3 if { path_beg /w/3/ }" in text
    check = await asyncio.create_subprocess_exec("haproxy", "-c", "-f", str(config), stdout=asyncio.subprocess.PIPE)
    output, _ = await check.communicate()
    assert check.returncode == 0 and b"valid" in output
