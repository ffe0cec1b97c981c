"""Peer connections whose DTLS also works with peers that hold an RSA certificate (GStreamer's webrtcbin).

aiortc answers as the DTLS client and offers only ECDHE-ECDSA cipher suites; a DTLS server with an RSA
certificate (GStreamer 1.22's webrtcbin) then has no suite to choose and the handshake fails ("no shared
cipher"). Our certificate stays ECDSA, as browsers expect; the client hello also lists the ECDHE-RSA
suites, so an RSA server can pick one. Nothing in site-packages is edited: a certificate subclass builds
the wider context, and `peer_connection` gives each connection one (aiortc keeps its certificates in a
private attribute that it reads only when transports are created, after the constructor); both go through
`aiortc_hooks`.
"""

from __future__ import annotations

from aiortc import RTCConfiguration, RTCPeerConnection

from . import aiortc_hooks

# aiortc's own list first (browsers and aiortc keep negotiating what they did), then the RSA ones.
CIPHERS = b":".join(
    [
        b"ECDHE-ECDSA-AES128-GCM-SHA256",
        b"ECDHE-ECDSA-CHACHA20-POLY1305",
        b"ECDHE-ECDSA-AES128-SHA",
        b"ECDHE-ECDSA-AES256-SHA",
        b"ECDHE-RSA-AES128-GCM-SHA256",
        b"ECDHE-RSA-CHACHA20-POLY1305",
        b"ECDHE-RSA-AES128-SHA",
        b"ECDHE-RSA-AES256-SHA",
    ]
)


class InteropCertificate(aiortc_hooks.CipherCertificate):
    """aiortc's ECDSA certificate, with a DTLS context that accepts ECDHE-RSA suites too."""

    CIPHERS = CIPHERS


def peer_connection(configuration: RTCConfiguration | None = None) -> RTCPeerConnection:
    """A new peer connection whose DTLS interoperates with RSA-certificate peers (see the module's text)."""
    pc = RTCPeerConnection(configuration)
    aiortc_hooks.set_certificates(pc, [InteropCertificate.generateCertificate()])
    return pc
