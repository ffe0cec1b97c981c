"""The URLs the API gives out, in one place; `prefix` is this process's route behind a proxy (--route-prefix)."""

from __future__ import annotations


def session_url(prefix: str, session_id: str) -> str:
    """The session's resource (GET, PATCH, DELETE): its capability."""
    return f"{prefix}/sessions/{session_id}"


def whep_url(prefix: str, session_id: str) -> str:
    """Where WHEP players POST their offers."""
    return f"{session_url(prefix, session_id)}/whep"


def player_url(prefix: str, session_id: str, player_id: str) -> str:
    """One WHEP player's resource (DELETE ends it)."""
    return f"{whep_url(prefix, session_id)}/{player_id}"


def viewer_url(prefix: str, session_id: str) -> str:
    """The viewer page that plays the session through WHEP."""
    return f"{prefix}/view/{session_id}"


def session_urls(prefix: str, session_id: str) -> dict[str, str]:
    """The `resource`, `whep` and `view` fields of an answer and of a session's description."""
    return {
        "resource": session_url(prefix, session_id),
        "whep": whep_url(prefix, session_id),
        "view": viewer_url(prefix, session_id),
    }
