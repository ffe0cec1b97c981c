"""A Backdrop client on aiortc: sends frames (a photo moving like a hand-held camera), collects the processed ones.

Used by the tests and by `backdrop loadtest`; also a starting point for any Python client.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field

import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from av import VideoFrame
from PIL import Image

from ..rtc.fec import Fec, FecFormats, protect
from ..rtc.recovery import recover_losses
from ..rtc.sdp import offer_fec
from .impair import ImpairedTransport, Impairment, impair
from .latency import LatencyProbe


def photo_frames(
    photo: np.ndarray, size: tuple[int, int] = (480, 640), count: int = 64, seed: int = 0
) -> list[np.ndarray]:
    """Crops of `photo` scaled to cover `size` (H, W), shifted a few pixels each frame like a hand-held camera."""
    height, width = size
    margin = 16
    scale = max((height + margin) / photo.shape[0], (width + margin) / photo.shape[1])
    big = np.asarray(
        Image.fromarray(photo).resize(
            (round(photo.shape[1] * scale), round(photo.shape[0] * scale)), Image.Resampling.BILINEAR
        )
    )
    rng = np.random.default_rng(seed)
    frames, x, y = [], margin // 2, 0
    for _ in range(count):
        x = int(np.clip(x + rng.integers(-2, 3), 0, big.shape[1] - width))
        y = int(np.clip(y + rng.integers(-2, 3), 0, big.shape[0] - height))
        frames.append(np.ascontiguousarray(big[y : y + height, x : x + width]))
    return frames


class FramesTrack(VideoStreamTrack):
    """Plays `frames` in a loop at 30 fps; with a `probe`, each stamped with a counter as it leaves."""

    def __init__(self, frames: list[np.ndarray], probe: LatencyProbe | None = None) -> None:
        super().__init__()
        self.frames = frames
        self.index = 0
        self.probe = probe

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        pixels = self.frames[self.index % len(self.frames)]
        if self.probe is not None:
            pixels = self.probe.sent(pixels)
        frame = VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.index += 1
        return frame


@dataclass(frozen=True)
class Network:
    """The client's side of an impaired network (see impair.py): `up` what it sends, `down` what it gets."""

    up: Impairment = field(default_factory=Impairment)
    down: Impairment = field(default_factory=Impairment)
    seed: int = 0


class Receiver:
    """A peer connection that receives the processed video: offers, accepts the answer, collects frames.

    With `marker` (the default) its video is decoded as soon as a frame's last packet arrives, as browsers
    do; without, on aiortc's rule, a frame interval later (see server/rtc/jitter.py). With `fec` (and
    `marker`) it offers RED and ULPFEC, as browsers do, and where the answer takes them, protects what it
    sends and repairs what it receives with them (server/rtc/fec.py)."""

    def __init__(
        self,
        marker: bool = True,
        network: Network | None = None,
        ice: RTCConfiguration | None = None,
        fec: bool = True,
    ) -> None:
        self.pc = RTCPeerConnection(ice)  # `ice`: STUN/TURN servers, a relay-only policy
        self.marker = marker
        self.fec = fec and marker  # the filler packets FEC leaves need the marker buffer (recovery.py)
        self.fec_links: list[Fec] = []  # with FEC negotiated: what it sent and recovered
        self.network = network
        self.links: list[ImpairedTransport] = []  # with a `network`: the impaired transports, their counters
        self.remote: asyncio.Future = asyncio.get_event_loop().create_future()
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video" and not self.remote.done():
            self.remote.set_result(track)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp: str = self.pc.localDescription.sdp
        return offer_fec(sdp) if self.fec else sdp  # aiortc offers no FEC of its own

    async def accept(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        if self.network is not None:  # before ICE connects: every media packet goes through the links
            self.links = impair(self.pc, self.network.up, self.network.down, self.network.seed)
        if self.marker:  # as browsers: a frame on its last packet, NACKs retried, a keyframe asked for in time
            recover_losses(self.pc)
        formats = FecFormats.from_sdp(answer_sdp) if self.fec else None
        if formats is not None:  # the server took the offer's RED and ULPFEC
            self.fec_links = protect(self.pc, formats)

    async def frames(self, count: int, wait_s: float = 30.0) -> list[np.ndarray]:
        """The next `count` processed frames, as RGB arrays."""
        track = await asyncio.wait_for(self.remote, wait_s)
        out = []
        for _ in range(count):
            frame = await asyncio.wait_for(track.recv(), wait_s)
            out.append(frame.to_ndarray(format="rgb24"))
        return out

    async def close(self) -> None:
        for link in self.links:
            link.close()
        await self.pc.close()


class Player(Receiver):
    """A WHEP player: receives a session's processed video (recvonly), sends nothing."""

    def __init__(
        self,
        marker: bool = True,
        network: Network | None = None,
        ice: RTCConfiguration | None = None,
        fec: bool = True,
    ) -> None:
        super().__init__(marker, network, ice, fec)
        self.pc.addTransceiver("video", direction="recvonly")


class Peer(Receiver):
    """Client side of one session: sendrecv (the processed video comes back), or sendonly (WHIP ingest; watch
    it with a `Player`)."""

    def __init__(
        self,
        frames: list[np.ndarray],
        audio: bool = False,
        direction: str = "sendrecv",
        latency: bool = False,
        marker: bool = True,
        network: Network | None = None,
        ice: RTCConfiguration | None = None,
        fec: bool = True,
    ) -> None:
        super().__init__(marker, network, ice, fec)
        self.probe = LatencyProbe() if latency else None  # glass-to-glass delays, when asked
        self.source = FramesTrack(frames, self.probe)
        self.pc.addTransceiver(self.source, direction=direction)
        if audio:
            from aiortc.mediastreams import AudioStreamTrack

            self.pc.addTrack(AudioStreamTrack())
        self.channel = self.pc.createDataChannel("control")
        self.messages: asyncio.Queue[dict] = asyncio.Queue()
        self.channel_open = asyncio.Event()
        self.channel.on("open", self.channel_open.set)
        self.channel.on("message", lambda m: self.messages.put_nowait(json.loads(m)))

    async def send_config(self, changes: dict, wait_s: float = 10.0) -> dict:
        """Send a config change over the data channel; returns the server's reply (skipping stats)."""
        await asyncio.wait_for(self.channel_open.wait(), wait_s)
        self.channel.send(json.dumps({"type": "config", "config": changes}))
        return await self.reply(wait_s)

    async def reply(self, wait_s: float = 10.0) -> dict:
        while True:
            message = await asyncio.wait_for(self.messages.get(), wait_s)
            if message.get("type") != "stats":
                return message

    async def stats(self, wait_s: float = 10.0) -> dict:
        while True:
            message = await asyncio.wait_for(self.messages.get(), wait_s)
            if message.get("type") == "stats":
                return message


async def count_frames(peer: Peer, seconds: float, arrivals: list[float] | None = None) -> int:
    """Processed frames received during `seconds` (after the first one arrives); with the peer's latency
    probe, each one's delay is recorded there; with `arrivals`, each frame's arrival time (loop seconds,
    the first frame's included) is appended to it."""
    track = await asyncio.wait_for(peer.remote, 30.0)
    await asyncio.wait_for(track.recv(), 30.0)
    loop = asyncio.get_running_loop()
    end, count = loop.time() + seconds, 0
    if arrivals is not None:
        arrivals.append(loop.time())
    while loop.time() < end:
        frame = await asyncio.wait_for(track.recv(), 30.0)
        if arrivals is not None:
            arrivals.append(loop.time())
        if peer.probe is not None:
            peer.probe.received(frame.to_ndarray(format="gray"))  # the code is read from luma alone
        count += 1
    return count


def freezes(arrivals: list[float], threshold_s: float = 0.2) -> dict[str, float]:
    """The longest gap between frames a viewer saw, and the total of the gaps longer than `threshold_s`."""
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    return {
        "longest_freeze_ms": round(1000 * max(gaps, default=0.0), 1),
        "frozen_s": round(sum(g for g in gaps if g > threshold_s), 3),
    }
