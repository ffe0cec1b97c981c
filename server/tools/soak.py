"""Soak: real WebRTC sessions joining and leaving a server for minutes on end, with the server's memory,
threads and open files sampled over time (what a leak would show first)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from .client import Peer, count_frames, photo_frames


def process_figures(pid: int) -> dict[str, float] | None:
    """RSS (MB), threads and open file descriptors of process `pid` (Linux /proc); None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    return {
        "rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024.0, 1),
        "threads": int(fields["Threads"]),
        "fds": fds,
    }


async def _one_session(http: aiohttp.ClientSession, url: str, frames: list, config: dict, rng: random.Random) -> str:
    """A session that streams for 3-15 s, then ends by DELETE or by the peer hanging up; returns how."""
    peer = Peer(frames)
    try:
        async with http.post(f"{url}/offer", json={"sdp": await peer.offer(), "type": "offer", "config": config}) as r:
            answer = await r.json()
            if r.status != 200:
                return f"refused {r.status}"
        await peer.accept(answer["sdp"])
        await count_frames(peer, rng.uniform(3.0, 15.0))
        if rng.random() < 0.5:
            async with http.delete(f"{url}{answer['resource']}"):
                pass
            return "delete"
        return "hang up"
    finally:
        await peer.close()


async def _sessions_gone(url: str, wait_s: float = 30.0) -> None:
    """Wait until the server holds no session (peers that hung up are noticed a little later)."""
    deadline = time.monotonic() + wait_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"{url}/healthz") as response:
                    if (await response.json()).get("sessions") == 0:
                        return
            except aiohttp.ClientError:
                return
            await asyncio.sleep(0.2)


async def soak(
    url: str,
    pid: int,
    minutes: float,
    sessions: int,
    size: tuple[int, int],
    config: dict[str, Any],
    photo: Any,
    sample_every: float = 10.0,
    progress: Callable[[dict], Awaitable[None] | None] | None = None,
) -> dict[str, Any]:
    """Keep up to `sessions` sessions coming and going for `minutes`; sample the server every `sample_every` s."""
    rng = random.Random(0)
    frames = photo_frames(photo, size=size, count=24)
    started = time.monotonic()
    deadline = started + minutes * 60.0
    samples: list[dict[str, float]] = []
    ended: dict[str, int] = {}

    async def sampler() -> None:
        while True:
            figures = process_figures(pid)
            if figures is not None:
                sample = {"t_s": round(time.monotonic() - started, 1), **figures}
                samples.append(sample)
                if progress is not None:
                    result = progress(sample)
                    if result is not None:
                        await result
            await asyncio.sleep(sample_every)

    async def lane() -> None:
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                try:
                    how = await _one_session(http, url, frames, config, rng)
                except (TimeoutError, aiohttp.ClientError, RuntimeError) as exc:
                    how = f"failed {type(exc).__name__}"
                ended[how] = ended.get(how, 0) + 1
                await asyncio.sleep(rng.uniform(0.0, 2.0))

    sampling = asyncio.ensure_future(sampler())
    try:
        await asyncio.gather(*(lane() for _ in range(sessions)))
        await _sessions_gone(url)
        await asyncio.sleep(1.5)  # the server collects closed connections 0.5 s after the last teardown
        last = process_figures(pid)
        if last is not None:
            samples.append({"t_s": round(time.monotonic() - started, 1), **last})
    finally:
        sampling.cancel()
    # After warm-up (the first tenth of the run, at least a minute, at most half of it: pools such as the
    # codecs' threads are made by the first sessions): what keeps growing is what leaks.
    warm_up = min(max(60.0, 0.1 * minutes * 60.0), 0.5 * minutes * 60.0)
    warm = [s for s in samples if s["t_s"] >= warm_up] or samples
    return {
        "minutes": minutes,
        "concurrent_sessions": sessions,
        "sessions_ended": ended,
        "rss_mb_after_warmup": warm[0]["rss_mb"],
        "rss_mb_end": samples[-1]["rss_mb"],
        "rss_growth_after_warmup_mb": round(samples[-1]["rss_mb"] - warm[0]["rss_mb"], 1),
        "threads_after_warmup": warm[0]["threads"],
        "threads_end": samples[-1]["threads"],
        "fds_after_warmup": warm[0]["fds"],
        "fds_end": samples[-1]["fds"],
        "samples": samples,
    }
