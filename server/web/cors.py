"""Cross-origin access for WHIP/WHEP clients in browsers (RFC 9725 asks servers to answer CORS): the
headers every response carries, and the preflight answer of the endpoints and resources."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

EXPOSED = "Location, ETag, Link, Accept-Post, Accept-Patch, WWW-Authenticate"
ALLOWED_HEADERS = "Authorization, Content-Type, If-Match"


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Any origin may call the API: sessions are capabilities and writes need a bearer token when one is set,
    never a cookie, so a foreign page gains nothing it could not do itself."""
    response = await handler(request)
    response.headers.setdefault("Access-Control-Allow-Origin", "*")
    response.headers.setdefault("Access-Control-Expose-Headers", EXPOSED)
    return response


def preflight(methods: str, **accept: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An OPTIONS handler: 204 with the methods, the CORS headers and, e.g., Accept-Post."""

    async def answer(request: web.Request) -> web.Response:
        headers = {
            "Allow": methods,
            "Access-Control-Allow-Methods": methods,
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": "86400",
        }
        headers.update({name.replace("_", "-").title(): value for name, value in accept.items()})
        return web.Response(status=204, headers=headers)

    return answer
