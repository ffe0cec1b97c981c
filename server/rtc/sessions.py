"""Sessions: one peer connection each, its config, its track, its data channel."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCConfiguration, RTCDataChannel, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole, MediaRelay
from aiortc.mediastreams import MediaStreamTrack
from pydantic import ValidationError

from models.zoo import ModelRegistry

from ..pipeline.backgrounds import BackgroundStore
from ..pipeline.config import SessionConfig
from ..pipeline.workers import PipelineWorkers
from .dtls import peer_connection
from .encoders import EncoderSettings, fit_senders, prefer_codec
from .inputs import RequestError, invalid
from .jitter import complete_frames_on_marker
from .messages import (
    MESSAGE_BURST,
    MESSAGE_RATE,
    ConfigReply,
    ErrorReply,
    StatsMessage,
    TokenBucket,
    encode,
    parse_message,
)
from .sdp import Fragment, ice_credentials, video_direction
from .stats import StreamStats, Totals
from .track import BackgroundReplacementTrack

log = logging.getLogger(__name__)


class SessionLimitError(RequestError):
    """The server already runs its maximum number of sessions (503: existing sessions are untouched)."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message)


class ConfigError(RequestError):
    """A config change that failed validation: 422, `field` names the offending key (400 if not an object)."""

    def __init__(self, message: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(status, message, field)


@dataclass(frozen=True)
class SessionPolicy:
    """The rules sessions live by: how many, how long without media, which ICE servers, which model."""

    max_sessions: int = 8
    media_timeout: float = 10.0  # seconds without video before a session is closed
    connect_timeout: float = 20.0  # seconds for ICE/DTLS to connect
    ice_servers: tuple[str, ...] = ()
    ice_username: str | None = None
    ice_credential: str | None = None
    default_model: str = "general"
    max_players: int = 8  # WHEP players per session
    encoders: EncoderSettings = field(default_factory=EncoderSettings)  # answers' codec, bitrate ceiling


def validate_config(
    base: SessionConfig, changes: object, backgrounds: BackgroundStore, registry: ModelRegistry
) -> SessionConfig:
    """`base` updated with `changes`, or ConfigError naming the first bad field."""
    if not isinstance(changes, dict):
        raise ConfigError("config must be a JSON object", "config", status=400)
    try:
        config = base.updated(changes)
    except ValidationError as exc:
        error = invalid(exc, "config")
        raise ConfigError(error.message, error.field) from None
    try:
        registry.resolve(config.model)
    except KeyError as exc:
        raise ConfigError(f"model: {exc.args[0]}", "config.model") from None
    if config.image not in backgrounds:
        raise ConfigError(f"image: no background named {config.image!r}", "config.image")
    return config


@dataclass
class Player:
    """A WHEP player of a session's processed video: its own peer connection, fed from the session's relay."""

    id: str
    pc: RTCPeerConnection
    created: float = field(default_factory=time.monotonic)


@dataclass
class Session:
    id: str
    pc: RTCPeerConnection
    config: SessionConfig
    returns_video: bool = True  # a sendrecv offer: the processed video also goes back on this connection
    created: float = field(default_factory=time.monotonic)
    track: BackgroundReplacementTrack | None = None
    # One processed track, many consumers (the sender of a sendrecv session, WHEP players): aiortc's relay,
    # unbuffered, so each gets the newest frame and no consumer adds pipeline work.
    relay: MediaRelay = field(default_factory=MediaRelay)
    players: dict[str, Player] = field(default_factory=dict)
    etag: str = field(default_factory=lambda: f'"{secrets.token_hex(8)}"')  # the ICE session's entity tag
    blackholes: list[MediaBlackhole] = field(default_factory=list)
    tasks: list[asyncio.Task] = field(default_factory=list)
    messages: TokenBucket = field(default_factory=lambda: TokenBucket(MESSAGE_RATE, MESSAGE_BURST))

    def describe(self, prefix: str = "") -> dict[str, Any]:
        """The session as its owner sees it; `prefix`: the route to the process that holds it (see --route-prefix)."""
        stats = (self.track.stats if self.track else StreamStats()).snapshot()
        return {
            "id": self.id,
            "config": self.config.model_dump(),
            "connection_state": self.pc.connectionState,
            "age_s": round(time.monotonic() - self.created, 1),
            "returns_video": self.returns_video,
            "resource": f"{prefix}/sessions/{self.id}",
            "whep": f"{prefix}/sessions/{self.id}/whep",
            "view": f"{prefix}/view/{self.id}",
            "players": len(self.players),
            "stats": stats,
        }


class SessionManager:
    """Creates, looks up and closes sessions; enforces the session limit and the media timeout."""

    def __init__(self, policy: SessionPolicy, workers: PipelineWorkers, totals: Totals | None = None) -> None:
        self.policy = policy
        self.workers = workers
        self.backgrounds = workers.pipeline.backgrounds
        self.registry = workers.pipeline.registry
        self.totals = totals or Totals()  # frames over every session, ended ones included
        self.sessions: dict[str, Session] = {}
        self._reserved = 0
        self._collect: asyncio.TimerHandle | None = None
        self._sweeper: asyncio.Task | None = None
        self.draining = False  # no new sessions; the live ones run on (see `drain`)
        self._emptied = asyncio.Event()

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def _ice_servers(self) -> list[RTCIceServer]:
        if not self.policy.ice_servers:
            return []
        return [
            RTCIceServer(
                urls=list(self.policy.ice_servers),
                username=self.policy.ice_username,
                credential=self.policy.ice_credential,
            )
        ]

    async def create(self, sdp: str, changes: object) -> tuple[Session, str]:
        """Answer an offer; returns the session and the answer SDP."""
        if self.draining:
            raise SessionLimitError("the server is draining (shutting down): offer to another server")
        base = SessionConfig(model=self.policy.default_model)
        config = validate_config(base, {} if changes is None else changes, self.backgrounds, self.registry)
        direction = video_direction(sdp)
        if direction == "recvonly":
            raise RequestError(422, "a recvonly offer watches a session: POST it to that session's WHEP URL", "sdp")
        if direction == "inactive":
            raise RequestError(422, "the offer's video is inactive: nothing to process", "sdp")
        if len(self.sessions) + self._reserved >= self.policy.max_sessions:
            raise SessionLimitError(f"the server already runs its maximum of {self.policy.max_sessions} sessions")
        self._reserved += 1
        pc = peer_connection(RTCConfiguration(iceServers=self._ice_servers()))
        # The id is the session's capability (RFC 9725): 128 random bits, given only to its creator.
        session = Session(id=secrets.token_urlsafe(16), pc=pc, config=config, returns_video=direction == "sendrecv")
        try:
            self._wire(session)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            if session.track is None:
                raise ValueError("the offer has no video track to process")
            complete_frames_on_marker(pc)  # a frame sooner to the pipeline (see jitter.py)
            prefer_codec(pc, self.policy.encoders)
            await pc.setLocalDescription(await pc.createAnswer())
            fit_senders(pc, self.policy.encoders)
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
                session.track = BackgroundReplacementTrack(track, self.workers, lambda: session.config, self.totals)
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
            session.tasks.append(asyncio.ensure_future(self._send_stats(session, channel)))

            @channel.on("message")
            def on_message(message: object) -> None:
                # Runs inside aiortc's receive loop: whatever the message holds, nothing may escape.
                try:
                    if session.messages.take():
                        reply = self.apply_message(session, message)
                    elif session.messages.report_once():
                        reply = encode(ErrorReply(error=f"more than {MESSAGE_RATE:g} messages a second; dropped"))
                    else:
                        return
                    if channel.readyState == "open":
                        channel.send(reply)
                except Exception:
                    log.exception("session %s: data-channel message not handled", session.id)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):  # ICE failure or the peer hanging up
                await self.close(session.id, reason=f"connection {pc.connectionState}")

    def apply_message(self, session: Session, message: object) -> str:
        """Handle one data-channel message; the reply (JSON) is the applied config or an error."""
        try:
            self.update(session, parse_message(message).changes())
        except RequestError as exc:
            return encode(ErrorReply(error=exc.message, field=exc.field))
        return encode(ConfigReply(config=session.config.model_dump()))

    def update(self, session: Session, changes: object) -> SessionConfig:
        session.config = validate_config(session.config, changes, self.backgrounds, self.registry)
        return session.config

    async def _send_stats(self, session: Session, channel: RTCDataChannel) -> None:
        while True:
            await asyncio.sleep(1.0)
            if channel.readyState == "open" and session.track is not None:
                channel.send(encode(StatsMessage(**session.track.stats.snapshot())))
            elif channel.readyState == "closed":
                return

    async def trickle(self, session: Session, fragment: Fragment) -> None:
        """Add a WHIP client's trickled candidates (RFC 8840); an ICE restart (new credentials) is refused."""
        description = session.pc.remoteDescription
        ufrag, pwd = ice_credentials(description.sdp) if description else (None, None)
        if (fragment.ufrag is not None and fragment.ufrag != ufrag) or (
            fragment.pwd is not None and fragment.pwd != pwd
        ):
            raise RequestError(422, "ICE restarts are not supported: end the session and start a new one", "sdpfrag")
        for candidate in fragment.candidates:
            await session.pc.addIceCandidate(candidate)
        if fragment.end_of_candidates:
            await session.pc.addIceCandidate(None)

    async def play(self, session: Session, sdp: str) -> tuple[Player, str]:
        """Answer a WHEP player's recvonly offer with the session's processed video."""
        if video_direction(sdp) != "recvonly":
            raise RequestError(422, "a WHEP offer receives the session's video: its video must be recvonly", "sdp")
        if session.track is None:
            raise RequestError(404, "no such session")
        if len(session.players) >= self.policy.max_players:
            raise SessionLimitError(f"this session already has its maximum of {self.policy.max_players} players")
        pc = peer_connection(RTCConfiguration(iceServers=self._ice_servers()))
        player = Player(id=secrets.token_urlsafe(16), pc=pc)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            pc.addTrack(session.relay.subscribe(session.track, buffered=False))
            prefer_codec(pc, self.policy.encoders)
            await pc.setLocalDescription(await pc.createAnswer())
            fit_senders(pc, self.policy.encoders)
        except Exception:
            await pc.close()
            raise
        session.players[player.id] = player

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.stop_player(session, player.id)

        log.info("session %s: player %s added (%d watching)", session.id, player.id, len(session.players))
        return player, pc.localDescription.sdp

    async def stop_player(self, session: Session, player_id: str) -> bool:
        player = session.players.pop(player_id, None)
        if player is None:
            return False
        await player.pc.close()
        player.pc.remove_all_listeners()
        self._collect_soon()
        return True

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
        for player_id in list(session.players):  # a session's players end with it
            await self.stop_player(session, player_id)
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
        self._collect_soon()

    def _collect_soon(self) -> None:
        """A closed peer connection sits in reference cycles (aiortc's own: transports' listeners hold the
        connection's bound methods) that only the cyclic garbage collector frees, and with it the codec
        contexts and their native threads (measured: ~2 threads kept per session ended by DELETE, until a
        full collection, which may take minutes to come). So collect once, shortly after sessions end; with
        the start-up's objects frozen (gc.freeze) that takes milliseconds, not the 100 ms of a full scan."""
        if self._collect is None:
            self._collect = asyncio.get_running_loop().call_later(0.5, self._run_collect)

    def _run_collect(self) -> None:
        self._collect = None
        gc.collect()

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
        if self._sweeper is not None:
            self._sweeper.cancel()
        await asyncio.gather(*(self.close(sid, "server shutting down") for sid in list(self.sessions)))
        if self._collect is not None:
            self._collect.cancel()
            self._run_collect()

    async def _sweep(self) -> None:
        """Close sessions that never connected (ICE failed) or whose video stopped."""
        settings = self.policy
        while True:
            await asyncio.sleep(min(1.0, settings.media_timeout / 4, settings.connect_timeout / 4))
            now = time.monotonic()
            for session in list(self.sessions.values()):
                # aioice itself gives up on unreachable candidates only after about a minute.
                if session.pc.connectionState != "connected" and now - session.created > settings.connect_timeout:
                    await self.close(session.id, reason=f"ICE/DTLS not connected after {settings.connect_timeout:g} s")
                    continue
                last = session.track.stats.last_media if session.track else session.created
                if now - max(last, session.created) > settings.media_timeout:
                    await self.close(session.id, reason="no media")
                    continue
                for player in list(session.players.values()):
                    if player.pc.connectionState != "connected" and now - player.created > settings.connect_timeout:
                        await self.stop_player(session, player.id)
