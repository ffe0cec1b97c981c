"""WHEP players: peer connections that watch a session's processed video, fed from its relay."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from .congestion import follow_losses
from .encoders import fit_senders, prefer_codec
from .errors import Invalid, NoRoom
from .policy import SessionPolicy
from .sdp import video_direction

log = logging.getLogger(__name__)


@dataclass
class Player:
    """One WHEP player: its own peer connection; its id is its capability."""

    id: str
    pc: RTCPeerConnection
    created: float = field(default_factory=time.monotonic)
    congestion: asyncio.Task | None = None  # the bitrate under a narrow link (congestion.py)


class Players:
    """The players of one session, up to the policy's `max_players`; their VP8 at `speed` (overuse.py)."""

    def __init__(
        self, policy: SessionPolicy, ended: Callable[[], None], speed: Callable[[], int] | None = None
    ) -> None:
        self.policy = policy
        self.speed = speed
        self._ended = ended  # called after a player's connection is closed (see collect.Collector)
        self._players: dict[str, Player] = {}

    def __len__(self) -> int:
        return len(self._players)

    async def add(self, relay: MediaRelay, source: MediaStreamTrack, sdp: str, label: str) -> tuple[Player, str]:
        """Answer a recvonly offer with `source` through `relay`; returns the player and the answer SDP."""
        if video_direction(sdp) != "recvonly":
            raise Invalid("a WHEP offer receives the session's video: its video must be recvonly", "sdp")
        if len(self._players) >= self.policy.max_players:
            raise NoRoom(f"this session already has its maximum of {self.policy.max_players} players")
        pc = self.policy.peer_connection()
        player = Player(id=secrets.token_urlsafe(16), pc=pc)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            pc.addTrack(relay.subscribe(source, buffered=False))
            prefer_codec(pc, self.policy.encoders)
            await pc.setLocalDescription(await pc.createAnswer())
            fit_senders(pc, self.policy.encoders, self.speed)
        except Exception:
            await pc.close()
            raise
        player.congestion = asyncio.ensure_future(follow_losses(pc))
        self._players[player.id] = player

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.stop(player.id)

        log.info("session %s: player %s added (%d watching)", label, player.id, len(self._players))
        return player, pc.localDescription.sdp

    async def stop(self, player_id: str) -> bool:
        """End one player; False if there is no such player."""
        player = self._players.pop(player_id, None)
        if player is None:
            return False
        if player.congestion is not None:
            player.congestion.cancel()
        await player.pc.close()
        player.pc.remove_all_listeners()
        self._ended()
        return True

    async def stop_all(self) -> None:
        for player_id in list(self._players):
            await self.stop(player_id)

    async def sweep(self, now: float) -> None:
        """End players whose connection did not come up within the policy's connect timeout."""
        for player in list(self._players.values()):
            if player.pc.connectionState != "connected" and now - player.created > self.policy.connect_timeout:
                await self.stop(player.id)
