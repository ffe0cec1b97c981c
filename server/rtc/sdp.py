"""What the WHIP/WHEP exchanges need to know of SDP: an offer's video direction, trickled ICE fragments, and the
payload types of forward error correction (RED, ULPFEC), which aiortc does not know."""

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


def _video_section(lines: list[str]) -> tuple[int, int] | None:
    """(first, end) line indices of the first video media section."""
    start = next((i for i, line in enumerate(lines) if line.startswith("m=video ")), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("m=")), len(lines))
    return start, end


def fec_payload_types(sdp: str) -> tuple[int, int, int | None] | None:
    """(RED, ULPFEC, RTX for RED or None) as the first video section maps them; None without RED and ULPFEC."""
    lines = sdp.splitlines()
    section = _video_section(lines)
    if section is None:
        return None
    names: dict[int, str] = {}
    apt: dict[int, int] = {}
    for line in lines[section[0] : section[1]]:
        if line.startswith("a=rtpmap:"):
            number, _, name = line[len("a=rtpmap:") :].partition(" ")
            if number.isdigit():
                names[int(number)] = name.split("/")[0].lower()
        elif line.startswith("a=fmtp:") and "apt=" in line:
            number, _, params = line[len("a=fmtp:") :].partition(" ")
            value = params.split("apt=")[1].split(";")[0].strip()
            if number.isdigit() and value.isdigit():
                apt[int(number)] = int(value)
    red = next((pt for pt, name in names.items() if name == "red"), None)
    ulpfec = next((pt for pt, name in names.items() if name == "ulpfec"), None)
    if red is None or ulpfec is None:
        return None
    rtx = next((pt for pt, name in names.items() if name == "rtx" and apt.get(pt) == red), None)
    return red, ulpfec, rtx


def offer_fec(sdp: str) -> str:
    """`sdp` (an offer aiortc made) with RED, ULPFEC and RTX for RED added to its first video section, on
    dynamic payload types it leaves free, as a browser offers them (aiortc itself offers neither)."""
    newline = "\r\n" if "\r\n" in sdp else "\n"
    lines = sdp.splitlines()
    section = _video_section(lines)
    if section is None or fec_payload_types(sdp) is not None:
        return sdp
    used = {int(pt) for line in lines if line.startswith("m=") for pt in line.split()[3:] if pt.isdigit()}
    red, ulpfec, rtx = [pt for pt in range(96, 128) if pt not in used][:3]
    start, end = section
    lines[start] += f" {red} {ulpfec} {rtx}"
    codec_lines = [i for i in range(start, end) if lines[i].startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"))]
    at = (codec_lines[-1] if codec_lines else start) + 1
    lines[at:at] = [
        f"a=rtpmap:{red} red/90000",
        f"a=rtpmap:{ulpfec} ulpfec/90000",
        f"a=rtpmap:{rtx} rtx/90000",
        f"a=fmtp:{rtx} apt={red}",
    ]
    return newline.join(lines) + newline
