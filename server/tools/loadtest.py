"""Load benchmark: N real WebRTC sessions against a server, frames per second each gets back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, replace
from functools import partial

import aiohttp
import numpy as np

from ..pipeline.workers import cpu_cores
from ..rtc.fec import totals
from .client import Network, Peer, count_frames, freezes, photo_frames
from .proxy import process_ports
from .soak import soak


def photo() -> np.ndarray:
    """scikit-image's astronaut when installed (a real person), else a synthetic head-and-shoulders."""
    try:
        import skimage.data

        return skimage.data.astronaut()
    except ImportError:
        y, x = np.mgrid[0:512, 0:512]
        person = ((x - 256) ** 2 + (y - 200) ** 2 < 90**2) | ((np.abs(x - 256) < 170) & (y > 320))
        image = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)
        image[person] = (200, 150, 120)
        return image


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process `pid` and its live descendants (a supervisor's server processes
    and proxy), all their threads (Linux /proc); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return own + sum(cpu_seconds(child) or 0.0 for child in _children(pid))


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    children: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listed:
                children += [int(c) for c in listed.read().split()]
        except OSError:
            continue
    return children


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_healthy(url: str, wait_s: float = 180.0) -> dict:  # --compile takes a while to start
    """The server's /healthz once it answers (device, workers, torch threads)."""
    deadline = time.monotonic() + wait_s
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return await response.json()
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server at {url} did not become healthy")
            await asyncio.sleep(0.3)


async def measure(
    url: str,
    sessions: int,
    seconds: float,
    size: tuple[int, int],
    config: dict,
    server_pid: int | None = None,
    cores: int | None = None,
    client_marker: bool = True,
    network: Network | None = None,
    fec: bool = True,
    frames: list[np.ndarray] | None = None,
) -> dict:
    """Open `sessions` sessions at once and count the frames each receives over `seconds`, and measure each
    frame's glass-to-glass latency (see latency.py: from leaving the client's camera track to arriving
    decoded from the server).

    With the server's pid, also its CPU time per delivered frame (decode + pipeline + encode + the rest),
    and from it how many sessions at 25 fps the server's `cores` (default: this machine's) could serve if the
    clients ran elsewhere. `client_marker`: the clients decode a frame on its last packet, as browsers do;
    without, a frame interval later, as aiortc alone does. `network`: each client's media packets cross
    that impaired network (each with its own seed), and the report adds what a viewer saw of it (freezes,
    bitrate) and what repaired it (NACKs, PLIs, retransmissions). `frames` (RGB, `size`): what each client's
    camera sends, in a loop; default: a photo, shifted a few pixels a frame.
    """
    frames = frames or photo_frames(photo(), size=size, count=48)
    networks = [None if network is None else replace(network, seed=network.seed + 1000 * i) for i in range(sessions)]
    peers = [Peer(frames, latency=True, marker=client_marker, network=n, fec=fec) for n in networks]
    arrivals: list[list[float]] = [[] for _ in peers]
    resources: list[str] = []  # each session's URL, which names its process behind a proxy
    async with aiohttp.ClientSession() as http:
        try:
            for peer in peers:
                body = {"sdp": await peer.offer(), "type": "offer", "config": config}
                async with http.post(f"{url}/offer", json=body) as response:
                    answer = await response.json()
                    if response.status != 200:
                        raise RuntimeError(f"offer refused: {answer}")
                await peer.accept(answer["sdp"])
                resources.append(answer["resource"])
            cpu_before, start = cpu_seconds(server_pid) if server_pid else None, time.monotonic()
            received_before = [await _bytes_in(p) for p in peers]
            counts: list[int] = await asyncio.gather(
                *(count_frames(p, seconds, a) for p, a in zip(peers, arrivals, strict=True))
            )
            received = [await _bytes_in(p) - b for p, b in zip(peers, received_before, strict=True)]
            cpu_after, elapsed = cpu_seconds(server_pid) if server_pid else None, time.monotonic() - start
            described = []
            for resource in resources:  # each session's own resource: the ids are the client's capabilities
                async with http.get(f"{url}{resource}") as response:
                    described.append(await response.json())
            async with http.get(f"{url}/healthz") as response:  # behind a proxy: one of the processes
                vp8_speed = (await response.json()).get("vp8_speed")
        finally:
            await asyncio.gather(*(p.close() for p in peers))
    fps = [c / seconds for c in counts]
    delays = [p.probe.samples_ms if p.probe is not None else [] for p in peers]
    latency = {
        "latency_ms_p50_each": [round(float(np.percentile(d, 50)), 1) if d else None for d in delays],
        "latency_ms_p95_each": [round(float(np.percentile(d, 95)), 1) if d else None for d in delays],
        "latency_frames_unreadable": sum(p.probe.unreadable for p in peers if p.probe is not None),
    }
    seen = [freezes(a) for a in arrivals]
    viewer = {
        "longest_freeze_ms_each": [s["longest_freeze_ms"] for s in seen],
        "frozen_s_each": [s["frozen_s"] for s in seen],
        # over the window the bytes were counted in (it includes the wait for each first frame)
        "received_kbps_each": [round(n * 8 / 1000 / elapsed) for n in received],
    }
    if network is not None:
        viewer["repair_each"] = [_repair(p) for p in peers]
    server_cpu: dict = {}
    if cpu_before is not None and cpu_after is not None and sum(counts) > 0:
        ms_per_frame = (cpu_after - cpu_before) * 1000.0 / sum(counts)
        cores = cores or cpu_cores()
        server_cpu = {
            "server_cpu_ms_per_frame": round(ms_per_frame, 2),
            # over the wall time measured: the clients wait for a first frame before their `seconds` start
            "server_cpu_cores_busy": round((cpu_after - cpu_before) / elapsed, 2),
            "cores": cores,
            "sessions_at_25fps_estimate": int(cores * 1000.0 / ms_per_frame // 25),
        }
    return {
        "sessions": sessions,
        "fps_each": [round(f, 1) for f in fps],
        "fps_min": round(min(fps), 1),
        "fps_median": round(statistics.median(fps), 1),
        "all_at_least_25fps": min(fps) >= 25.0,
        **latency,
        **viewer,
        **server_cpu,
        "server_vp8_speed": vp8_speed,  # at the end: raised while the server's cores could not keep up
        "server": [s["stats"] for s in described],
    }


async def _bytes_in(peer: Peer) -> int:
    """Bytes that reached the client's DTLS transport (media, its RTCP, the data channel)."""
    report = await peer.pc.getStats()
    return sum(getattr(stats, "bytesReceived", 0) for stats in report.values() if stats.type == "transport")


def _repair(peer: Peer) -> dict:
    """What the client's impaired links saw: losses and drops each way, the feedback each side sent, and
    the server's retransmissions (RTX packets, by the payload types the answer gave RTX)."""
    rtx = {int(m) for m in re.findall(r"a=rtpmap:(\d+) rtx/", peer.pc.remoteDescription.sdp)}
    up = [link.up.counters for link in peer.links]
    down = [link.down.counters for link in peer.links]
    return {
        "up_lost": sum(c.lost for c in up),
        "up_queue_drops": sum(c.queue_drops for c in up),
        "down_lost": sum(c.lost for c in down),
        "down_queue_drops": sum(c.queue_drops for c in down),
        "nacks_sent": sum(link.sent.nack for link in peer.links),
        "plis_sent": sum(link.sent.pli + link.sent.fir for link in peer.links),
        "nacks_received": sum(link.received.nack for link in peer.links),
        "plis_received": sum(link.received.pli + link.received.fir for link in peer.links),
        "retransmissions_received": sum(n for link in peer.links for pt, n in link.received.rtp.items() if pt in rtx),
        "retransmissions_sent": sum(n for link in peer.links for pt, n in link.sent.rtp.items() if pt in rtx),
        **{f"client_{name}": value for name, value in totals(peer.fec_links).items()},
    }


def split_cores(server_cores: int) -> tuple[list[int], list[int]]:
    """(server's cores, clients' cores): the first `server_cores` of the cores this process may use, and the rest."""
    available = sorted(os.sched_getaffinity(0))
    if not 0 < server_cores < len(available):
        raise ValueError(
            f"--server-cores {server_cores}: this process may use {len(available)} core(s); "
            "the server needs at least one and the client peers at least one of them"
        )
    return available[:server_cores], available[server_cores:]


@contextlib.asynccontextmanager
async def serving(
    url: str | None,
    max_sessions: int,
    device: str | None,
    compile: bool,
    server_cores: int,
    processes: int = 1,
    fec: bool = True,
) -> AsyncIterator[tuple[str, int | None, dict, int]]:
    """(url, server pid, pinning, cores): `backdrop serve` started in a subprocess unless `url` is given,
    on `server_cores` cores with this process's client peers on the others when asked (Linux); with
    `processes` above 1, that many server processes behind the HAProxy the server runs."""
    if url is not None:
        if server_cores:
            raise ValueError("--server-cores pins the server loadtest starts; it cannot pin one given by --url")
        yield url, None, {}, cpu_cores()
        return
    port = free_port()
    cmd = [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--max-sessions", str(max_sessions), "--compile" if compile else "--no-compile"]
    cmd += [] if fec else ["--no-fec"]
    cmd += ["--device", device] if device else []
    cmd += ["--processes", str(processes), "--proxy", "haproxy"] if processes > 1 else []
    affinity, pinned, cores = None, {}, cpu_cores()
    if server_cores:
        server_cpus, client_cpus = split_cores(server_cores)
        os.sched_setaffinity(0, client_cpus)  # threads started from here on (the peers' codecs) inherit it
        affinity = partial(os.sched_setaffinity, 0, server_cpus)  # run in the child, before exec
        pinned, cores = {"server_cpus": server_cpus, "client_cpus": client_cpus}, len(server_cpus)
    server = await asyncio.create_subprocess_exec(
        *cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy(), preexec_fn=affinity
    )
    try:
        if processes > 1:  # every process ready and seen by the proxy (it checks each second)
            for http, _ in process_ports(port, processes):
                await wait_healthy(f"http://127.0.0.1:{http}")
            await asyncio.sleep(2.5)
        yield f"http://127.0.0.1:{port}", server.pid, pinned, cores
    finally:
        server.send_signal(signal.SIGINT)  # at once: SIGTERM would drain sessions that are ending anyway
        await asyncio.wait_for(server.wait(), 30)


async def run_loadtest(
    sessions: list[int],
    seconds: float,
    size: tuple[int, int],
    config: dict,
    url: str | None,
    device: str | None,
    compile: bool = False,
    server_cores: int = 0,
    processes: int = 1,
    client_marker: bool = True,
    network: Network | None = None,
    fec: bool = True,
    frames: list[np.ndarray] | None = None,
) -> dict:
    """Measure each session count in turn; starts `backdrop serve` in a subprocess unless `url` is given.

    With `server_cores`, the started server runs on that many cores and the client peers on the others,
    so the figures are the server's alone (Linux). Without `fec`, neither the clients nor the started server
    offer or take forward error correction (server/rtc/fec.py).
    """
    started = serving(url, max(sessions), device, compile, server_cores, processes, fec)
    async with started as (url, pid, pinned, cores):
        health = await wait_healthy(url)
        results = []
        for n in sessions:
            results.append(
                await measure(url, n, seconds, size, config, pid, cores, client_marker, network, fec, frames)
            )
            await asyncio.sleep(1.0)  # let the server close the previous sessions
        report = {
            "url": url,
            "processes": processes,
            "size": f"{size[1]}x{size[0]}",
            "seconds": seconds,
            "config": config,
            "client_receive": "marker" if client_marker else "timestamp",
            "fec": fec,
            "network": None if network is None else {"up": asdict(network.up), "down": asdict(network.down)},
            "camera": "the photo" if frames is None else f"{len(frames)} frames of a video",
            "health": health,
        }
        return {**report, **pinned, "runs": results}


async def run_soak(
    minutes: float,
    sessions: int,
    size: tuple[int, int],
    config: dict,
    url: str | None,
    device: str | None,
    compile: bool = False,
    sample_every: float = 10.0,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """`sessions` lanes of sessions joining and leaving for `minutes`, against a server this starts (its
    process is sampled: RSS, threads, fds); a server given by `url` is driven but cannot be sampled."""
    if url is not None:
        raise ValueError("--soak samples the server it starts; leave out --url")
    async with serving(None, sessions + 1, device, compile, 0) as (url, pid, _, _):
        health = await wait_healthy(url)
        assert pid is not None
        report = await soak(url, pid, minutes, sessions, size, config, photo(), sample_every, progress)
        return {"url": url, "size": f"{size[1]}x{size[0]}", "config": config, "health": health, **report}
