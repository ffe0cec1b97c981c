"""What the WebRTC layer refuses, by kind; `server.web.errors` maps each kind to its HTTP status."""

from __future__ import annotations


class RequestError(Exception):
    """Input the server refuses: `message` says what, `field` names the part of the input at fault."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Malformed(RequestError):
    """Not what it claims to be: not UTF-8, not JSON, nested too deep, not an SDP offer or fragment."""


class NotFound(RequestError):
    """No such session or player (or not one this client may know)."""


class TooLarge(RequestError):
    """Larger than the server accepts."""


class WrongType(RequestError):
    """A content type (or a data-channel frame type) the endpoint does not take."""


class Invalid(RequestError):
    """Well-formed but refused: an unknown or ill-typed config field, an offer that cannot be served."""


class NoRoom(RequestError):
    """A limit is reached (sessions, players) or the server is draining; what exists is untouched."""
