"""The rules sessions live by, and the peer connections they make under them."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

from .dtls import peer_connection
from .encoders import EncoderSettings


@dataclass(frozen=True)
class SessionPolicy:
    """How many sessions, how long without media, which ICE servers, which model, which encoder."""

    max_sessions: int = 8
    media_timeout: float = 10.0  # seconds without video before a session is closed
    connect_timeout: float = 20.0  # seconds for ICE/DTLS to connect
    ice_servers: tuple[str, ...] = ()
    ice_username: str | None = None
    ice_credential: str | None = None
    default_model: str = "general"
    max_players: int = 8  # WHEP players per session
    encoders: EncoderSettings = field(default_factory=EncoderSettings)  # answers' codec, bitrate ceiling
    fec: bool = True  # answer an offer's RED and ULPFEC: forward error correction both ways (fec.py)

    def peer_connection(self) -> RTCPeerConnection:
        """A new peer connection that gathers candidates through this policy's STUN/TURN servers."""
        servers = []
        if self.ice_servers:
            servers.append(
                RTCIceServer(urls=list(self.ice_servers), username=self.ice_username, credential=self.ice_credential)
            )
        return peer_connection(RTCConfiguration(iceServers=servers))
