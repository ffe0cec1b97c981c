"""The middleware that renders every error as JSON: refused input with the status of its kind, aiohttp's own
errors, and anything unexpected as a 500 with a request id (its traceback logged once)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..rtc.errors import Invalid, Malformed, NoRoom, NotFound, RequestError, TooLarge, WrongType

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The HTTP status of each kind of refusal the WebRTC layer raises.
STATUSES: dict[type[RequestError], int] = {
    Malformed: 400,
    NotFound: 404,
    TooLarge: 413,
    WrongType: 415,
    Invalid: 422,
    NoRoom: 503,
}


class HTTPError(RequestError):
    """A refusal only HTTP has words for (403, 412, 428, 500, 507): its status given where it is raised."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message, field)
        self.status = status


def status_of(error: RequestError) -> int:
    """The HTTP status that answers `error`."""
    if isinstance(error, HTTPError):
        return error.status
    for kind in type(error).__mro__:
        if kind in STATUSES:
            return STATUSES[kind]
    return 400


def error_response(status: int, message: str, field: str | None = None, **extra: str) -> web.Response:
    body: dict[str, str] = {"error": message, **extra}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as exc:
        return error_response(status_of(exc), exc.message, exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, "request body too large" if exc.status == 413 else exc.reason)
        for name in ("Allow", "WWW-Authenticate"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except Exception:
        request_id = secrets.token_hex(8)
        log.exception("request %s (%s %s) failed", request_id, request.method, request.path)
        return error_response(500, "internal error; the server logged it", request_id=request_id)
