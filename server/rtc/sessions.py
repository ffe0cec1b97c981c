"""Sessions: one peer connection each, its config and its track; the session limit, timeouts, teardown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole, MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from models.zoo import Plan

from ..pipeline.config import ConfigError, SessionConfig, validate_config
from ..pipeline.workers import PipelineWorkers, cpu_cores
from .channel import attach
from .collect import Collector
from .congestion import Follower, follow_losses
from .congestion import totals as congestion_totals
from .encoders import fit_senders, prefer_codec
from .errors import Invalid, Malformed, NoRoom, NotFound
from .fec import Fec, FecFormats, accept, protect, totals
from .messages import MESSAGE_BURST, MESSAGE_RATE, TokenBucket
from .overuse import EncoderSpeed
from .players import Player, Players
from .policy import SessionPolicy
from .recovery import RecoveringJitterBuffer, recover_losses
from .sdp import video_direction
from .stats import StreamStats, Totals
from .track import BackgroundReplacementTrack

log = logging.getLogger(__name__)


@dataclass
class Session:
    id: str  # the session's capability (RFC 9725): 128 random bits, given only to its creator
    pc: RTCPeerConnection
    config: SessionConfig
    plan: Plan  # what `config.model` runs, resolved when the config was checked
    players: Players
    returns_video: bool = True  # a sendrecv offer: the processed video also goes back on this connection
    created: float = field(default_factory=time.monotonic)
    track: BackgroundReplacementTrack | None = None
    # One processed track, many consumers (the sender of a sendrecv session, WHEP players): aiortc's relay,
    # unbuffered, so each gets the newest frame and no consumer adds pipeline work.
    relay: MediaRelay = field(default_factory=MediaRelay)
    etag: str = field(default_factory=lambda: f'"{secrets.token_hex(8)}"')  # the ICE session's entity tag
    blackholes: list[MediaBlackhole] = field(default_factory=list)
    tasks: list[asyncio.Task] = field(default_factory=list)
    messages: TokenBucket = field(default_factory=lambda: TokenBucket(MESSAGE_RATE, MESSAGE_BURST))
    receivers: list[RecoveringJitterBuffer] = field(default_factory=list)  # the video's loss recovery
    fec: list[Fec] = field(default_factory=list)  # its forward error correction, where both ends negotiated it
    followers: list[Follower] = field(default_factory=list)  # its sent video's bitrate cap (congestion.py)

    def settings(self) -> tuple[SessionConfig, Plan]:
        """The config and its plan, read together for each frame."""
        return self.config, self.plan

    def stats(self) -> StreamStats | None:
        return self.track.stats if self.track is not None else None

    def describe(self) -> dict[str, Any]:
        """The session as its owner sees it (its URLs are the web layer's to add)."""
        return {
            "id": self.id,
            "config": self.config.model_dump(),
            "connection_state": self.pc.connectionState,
            "age_s": round(time.monotonic() - self.created, 1),
            "returns_video": self.returns_video,
            "players": len(self.players),
            "stats": {
                **(self.stats() or StreamStats()).snapshot(),
                "gaps_skipped": sum(r.skips for r in self.receivers),
                "keyframes_requested": sum(r.keyframe_requests for r in self.receivers),
                "silences_asked": sum(r.nacks.silences for r in self.receivers if r.nacks is not None),
                **totals(self.fec),
                **congestion_totals(self.followers),
            },
        }


class SessionManager:
    """Creates, looks up and closes sessions; enforces the session limit and the media timeout."""

    def __init__(
        self,
        policy: SessionPolicy,
        workers: PipelineWorkers,
        totals: Totals | None = None,
        cores: int = 0,
    ) -> None:
        """`cores`: how many of the cores this process may run on are its share (0: all of them)."""
        self.policy = policy
        self.workers = workers
        self.backgrounds = workers.pipeline.backgrounds
        self.registry = workers.pipeline.registry
        self.totals = totals or Totals()  # frames over every session, ended ones included
        # VP8's speed for every session's encoders: raised while this process's cores cannot keep up.
        encoders, cores = policy.encoders, min(cores, cpu_cores()) if cores else cpu_cores()
        fastest = max(encoders.vp8_speed, encoders.vp8_speed_max or 0)
        self.speed = EncoderSpeed(encoders.vp8_speed, fastest, cores)
        self._speed_follower: asyncio.Task | None = None
        self.sessions: dict[str, Session] = {}
        self._reserved = 0
        self._collector = Collector()
        self._sweeper: asyncio.Task | None = None
        self.draining = False  # no new sessions; the live ones run on (see `drain`)
        self._emptied = asyncio.Event()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.create_task(self._sweep())
        if self.speed.ceiling > self.speed.floor:  # a fixed speed has nothing to follow
            self._speed_follower = loop.create_task(self.speed.follow(self.totals))

    def checked(self, base: SessionConfig, changes: object) -> SessionConfig:
        """`base` with `changes` applied, or Invalid (Malformed if not an object) naming the field at fault."""
        try:
            return validate_config(base, changes, self.backgrounds, self.registry)
        except ConfigError as exc:
            raise (Malformed if exc.malformed else Invalid)(exc.message, exc.field) from None

    async def create(self, sdp: str, changes: object) -> tuple[Session, str]:
        """Answer an offer; returns the session and the answer SDP."""
        if self.draining:
            raise NoRoom("the server is draining (shutting down): offer to another server")
        config = self.checked(SessionConfig(model=self.policy.default_model), {} if changes is None else changes)
        direction = video_direction(sdp)
        if direction == "recvonly":
            raise Invalid("a recvonly offer watches a session: POST it to that session's WHEP URL", "sdp")
        if direction == "inactive":
            raise Invalid("the offer's video is inactive: nothing to process", "sdp")
        if len(self.sessions) + self._reserved >= self.policy.max_sessions:
            raise NoRoom(f"the server already runs its maximum of {self.policy.max_sessions} sessions")
        self._reserved += 1
        pc = self.policy.peer_connection()
        session = Session(
            id=secrets.token_urlsafe(16),
            pc=pc,
            config=config,
            plan=self.registry.plan(config.model),
            players=Players(self.policy, self._collector.soon, self.speed),
            returns_video=direction == "sendrecv",
        )
        try:
            self._wire(session)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            if session.track is None:
                raise ValueError("the offer has no video track to process")
            # A frame sooner to the pipeline (jitter.py), and losses repaired or skipped in time (recovery.py);
            # the pipeline keeps only the newest frame, so a backlog comes paced.
            session.receivers = recover_losses(pc, pace_backlogs=True)
            session.tasks.extend(r.timer for r in session.receivers if r.timer is not None)
            prefer_codec(pc, self.policy.encoders)
            fec = accept(pc, FecFormats.from_sdp(sdp)) if self.policy.fec else None  # RED and ULPFEC (fec.py)
            await pc.setLocalDescription(await pc.createAnswer())
            fit_senders(pc, self.policy.encoders, self.speed)
            session.fec = protect(pc, fec) if fec is not None else []
            # The bitrate under a narrow link, its decisions in the session's stats.
            session.tasks.append(asyncio.ensure_future(follow_losses(pc, followers=session.followers)))
        except Exception:
            self._reserved -= 1
            await self._teardown(session)
            raise
        self._reserved -= 1
        self.sessions[session.id] = session
        log.info("session %s opened (%d running)", session.id, len(self.sessions))
        return session, pc.localDescription.sdp

    def _wire(self, session: Session) -> None:
        pc = session.pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and session.track is None:
                session.track = BackgroundReplacementTrack(track, self.workers, session.settings, self.totals)
                if session.returns_video:
                    pc.addTrack(session.relay.subscribe(session.track, buffered=False))
            else:
                # Audio and extra video tracks are consumed so their buffers never grow.
                sink = MediaBlackhole()
                sink.addTrack(track)
                session.blackholes.append(sink)
                session.tasks.append(asyncio.ensure_future(sink.start()))

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            update = partial(self.update, session)
            session.tasks.append(attach(channel, session.messages, update, session.stats, session.id))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):  # ICE failure or the peer hanging up
                await self.close(session.id, reason=f"connection {pc.connectionState}")

    def update(self, session: Session, changes: object) -> SessionConfig:
        config = self.checked(session.config, changes)
        session.config, session.plan = config, self.registry.plan(config.model)  # the plan is cached by name
        return session.config

    async def play(self, session: Session, sdp: str) -> tuple[Player, str]:
        """Answer a WHEP player's recvonly offer with the session's processed video."""
        if session.track is None:
            raise NotFound("no such session")
        return await session.players.add(session.relay, session.track, sdp, session.id)

    def images_in_use(self) -> set[str]:
        """The background images live sessions name (an upload in this set is never evicted)."""
        return {session.config.image for session in self.sessions.values()}

    async def close(self, session_id: str, reason: str = "closed") -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        log.info("session %s closed: %s", session_id, reason)
        await self._teardown(session)
        if not self.sessions:
            self._emptied.set()
        return True

    async def _teardown(self, session: Session) -> None:
        await session.players.stop_all()  # a session's players end with it
        for task in session.tasks:
            task.cancel()
        for sink in session.blackholes:
            await sink.stop()
        if session.track is not None:
            session.track.stop()
        await session.pc.close()
        session.pc.remove_all_listeners()
        session.tasks.clear()
        session.blackholes.clear()
        session.track = None
        self._collector.soon()

    async def drain(self, wait_s: float) -> int:
        """Take no new sessions and wait up to `wait_s` seconds for the live ones to end; returns how many
        are still live (the caller closes them)."""
        self.draining = True
        if self.sessions:
            self._emptied.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._emptied.wait(), wait_s)
        return len(self.sessions)

    async def close_all(self) -> None:
        for task in (self._sweeper, self._speed_follower):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(self.close(sid, "server shutting down") for sid in list(self.sessions)))
        self._collector.now()

    async def _sweep(self) -> None:
        """Close sessions that never connected (ICE failed) or whose video stopped."""
        policy = self.policy
        while True:
            await asyncio.sleep(min(1.0, policy.media_timeout / 4, policy.connect_timeout / 4))
            now = time.monotonic()
            for session in list(self.sessions.values()):
                # aioice itself gives up on unreachable candidates only after about a minute.
                if session.pc.connectionState != "connected" and now - session.created > policy.connect_timeout:
                    await self.close(session.id, reason=f"ICE/DTLS not connected after {policy.connect_timeout:g} s")
                    continue
                last = session.track.stats.last_media if session.track else session.created
                if now - max(last, session.created) > policy.media_timeout:
                    await self.close(session.id, reason="no media")
                    continue
                await session.players.sweep(now)
