"""Trickle ICE (RFC 8840): a WHIP client's candidates, added to its session's peer connection."""

from __future__ import annotations

from aiortc import RTCPeerConnection

from .errors import Invalid
from .sdp import Fragment, ice_credentials


async def trickle(pc: RTCPeerConnection, fragment: Fragment) -> None:
    """Add the fragment's candidates (and its end-of-candidates); an ICE restart (new credentials) is refused."""
    description = pc.remoteDescription
    ufrag, pwd = ice_credentials(description.sdp) if description else (None, None)
    if (fragment.ufrag is not None and fragment.ufrag != ufrag) or (fragment.pwd is not None and fragment.pwd != pwd):
        raise Invalid("ICE restarts are not supported: end the session and start a new one", "sdpfrag")
    for candidate in fragment.candidates:
        await pc.addIceCandidate(candidate)
    if fragment.end_of_candidates:
        await pc.addIceCandidate(None)
