"""What the WHIP/WHEP exchanges need to know of SDP: an offer's video direction, trickled ICE fragments."""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCIceCandidate
from aiortc.sdp import SessionDescription, candidate_from_sdp

from .errors import Malformed


def video_direction(sdp: str) -> str:
    """The direction of the offer's first video section as the offerer sees it: sendrecv, sendonly, ..."""
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises ValueError, IndexError, KeyError on bad SDP
        raise Malformed(f"unusable SDP offer: {str(exc)[:200]}", "sdp") from None
    for media in description.media:
        if media.kind == "video":
            return media.direction or "sendrecv"
    raise Malformed("the offer has no video", "sdp")


def ice_credentials(sdp: str) -> tuple[str | None, str | None]:
    """(ufrag, pwd) of a description's first media section (BUNDLE: one ICE transport)."""
    description = SessionDescription.parse(sdp)
    for media in description.media:
        if media.ice is not None:
            return media.ice.usernameFragment, media.ice.password
    return None, None


@dataclass(frozen=True)
class Fragment:
    """An application/trickle-ice-sdpfrag body (RFC 8840): ICE credentials and candidates per media id."""

    ufrag: str | None
    pwd: str | None
    candidates: list[RTCIceCandidate]
    end_of_candidates: bool


def parse_fragment(text: str) -> Fragment:
    """Parse a trickle-ICE SDP fragment; Malformed on lines it cannot use."""
    ufrag = pwd = None
    mid: str | None = None
    index = -1
    candidates: list[RTCIceCandidate] = []
    end = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("m="):
            index += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        elif line.startswith("a=ice-ufrag:"):
            ufrag = line[len("a=ice-ufrag:") :]
        elif line.startswith("a=ice-pwd:"):
            pwd = line[len("a=ice-pwd:") :]
        elif line.startswith("a=candidate:"):
            try:
                candidate = candidate_from_sdp(line[len("a=") :])
            except Exception:
                raise Malformed(f"unusable candidate line: {line[:120]}", "candidate") from None
            candidate.sdpMid = mid
            candidate.sdpMLineIndex = max(index, 0)
            candidates.append(candidate)
        elif line == "a=end-of-candidates":
            end = True
        elif line[:2] not in ("a=", "m=", "c="):
            raise Malformed(f"not an SDP fragment line: {line[:120]}", "sdpfrag")
    return Fragment(ufrag, pwd, candidates, end)
