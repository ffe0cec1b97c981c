"""The HTTP API and the demo page: handlers and the one table of routes."""

from __future__ import annotations

import asyncio
import hmac
import logging
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from models.images import ImageTooLarge, UnreadableImage
from models.weights import WeightsMissingError

from ..pipeline.backgrounds import BackgroundsFull
from ..pipeline.config import SessionConfig
from ..rtc.errors import Invalid, Malformed, NotFound, RequestError, TooLarge, WrongType
from ..rtc.inputs import MAX_MESSAGE_BYTES, decode_text, parse_json, validated
from ..rtc.sdp import parse_fragment
from ..rtc.sessions import Session
from ..rtc.trickle import trickle
from .cors import Handler, preflight
from .errors import HTTPError
from .keys import IMAGES, METRICS, PIPELINE, SESSIONS, SETTINGS, TORCH_THREADS, WORKERS
from .openapi import BEARER, OPERATOR, SDP, document, not_in_api, operation
from .schemas import (
    Answer,
    BackgroundList,
    ConfigChange,
    Defaults,
    Health,
    ModelList,
    OfferRequest,
    SessionDescription,
    SessionList,
    Upload,
)
from .urls import player_url, session_urls

log = logging.getLogger(__name__)
# The page ships inside the package (static/ at the top of the source tree, mapped to server.web.static).
STATIC = Path(str(resources.files("server.web.static")))
# What the operations below share in the OpenAPI document (see openapi.py).
SESSION = {"id": "the session's id, as its creator was told"}  # the path parameter
WHIP_CREATED = {
    "description": "the answer (WHIP: an application/sdp offer, config in the query string); Link headers name "
    "the ICE servers, the session's WHEP endpoint (rel=whep) and its viewer page (rel=alternate)",
    "headers": {
        "Location": {"schema": {"type": "string"}},
        "ETag": {"schema": {"type": "string"}},
        "Link": {"schema": {"type": "string"}},
    },
    "content": {"application/sdp": {"schema": SDP}},
}


async def _body(request: web.Request, limit: int, what: str) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"{what} larger than {limit} bytes")
    data = await request.read()
    if len(data) > limit:
        raise TooLarge(f"{what} larger than {limit} bytes")
    return data


def _sdp(text: str) -> str:
    if not text.strip().startswith("v="):
        raise Malformed("sdp must be an SDP offer (starting with 'v=')", "sdp")
    return text


def _session(request: web.Request) -> Session:
    """The session the URL names: its id is the capability, known only to the client that made it."""
    session = request.app[SESSIONS].sessions.get(request.match_info["id"])
    if session is None:
        raise NotFound("no such session")
    return session


def _describe(request: web.Request, session: Session) -> dict[str, Any]:
    """The session as its owner sees it, with its URLs through this process's route."""
    return {**session.describe(), **session_urls(request.app[SETTINGS].route_prefix, session.id)}


def _bears(request: web.Request, tokens: list[str]) -> bool:
    """Whether the request's `Authorization: Bearer` is one of `tokens` (compared in constant time)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and any(hmac.compare_digest(given.encode(), t.encode()) for t in tokens)


def _is_operator(request: web.Request) -> bool:
    """Whether the request carries the operator token."""
    token = request.app[SETTINGS].operator_token
    return token is not None and _bears(request, [token.get_secret_value()])


def _authorize(request: web.Request) -> None:
    """With --token set, creating, changing or ending a session needs one of the tokens (RFC 9725: bearer)."""
    tokens = request.app[SETTINGS].tokens
    if not tokens or _bears(request, tokens):
        return
    raise web.HTTPUnauthorized(
        reason="Unauthorized: this server needs a bearer token", headers={"WWW-Authenticate": 'Bearer realm="backdrop"'}
    )


def _ice_links(request: web.Request) -> list[str]:
    """Link headers for the configured STUN/TURN servers (RFC 9725 section 4.4)."""
    settings = request.app[SETTINGS]
    links = []
    for url in settings.ice_servers:
        link = f'<{url}>; rel="ice-server"'
        if url.startswith(("turn:", "turns:")) and settings.ice_username and settings.ice_credential:
            link += f'; username="{settings.ice_username}"; credential="{settings.ice_credential}"'
            link += '; credential-type="password"'
        links.append(link)
    return links


def _operator(request: web.Request) -> None:
    """Refuses what is for operators only: 403 when the server has no token, 401 without the right one."""
    if request.app[SETTINGS].operator_token is None:
        raise HTTPError(403, "listings are off: start the server with --operator-token to use them")
    if not _is_operator(request):
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="backdrop operators"'})


@operation(
    security=BEARER,
    request={"application/json": OfferRequest, "application/sdp": SDP},
    responses={200: (Answer, "the answer (JSON offers)"), 201: WHIP_CREATED},
    errors=(400, 401, 413, 422, 503),
)
async def offer(request: web.Request) -> web.Response:
    """Start a session: an SDP offer in, the answer out.

    JSON {sdp, type: offer, config} -> 200 {sdp, type: answer, session_id}; raw application/sdp (WHIP) -> 201."""
    _authorize(request)
    data = await _body(request, request.app[SETTINGS].max_offer_bytes, "offer")
    whip = request.content_type == "application/sdp"
    changes: dict[str, Any]
    if whip:
        sdp = _sdp(decode_text(data, "sdp"))
        changes = dict(request.query)  # strings; the config's fields convert them ("0.3", "true")
    else:
        body = validated(OfferRequest, parse_json(data))
        sdp, changes = _sdp(body.sdp), body.config.changes()  # only the fields sent, checked already
    try:
        session, answer = await request.app[SESSIONS].create(sdp, changes)
    except RequestError:
        raise
    except WeightsMissingError as exc:
        raise HTTPError(500, str(exc)) from None
    except Exception as exc:  # aiortc raises ValueError and friends on SDP it cannot use
        log.info("rejected offer: %s", exc)
        raise Malformed(f"unusable SDP offer: {str(exc)[:200]}", "sdp") from None
    # This process's route behind a proxy (see --route-prefix).
    urls = session_urls(request.app[SETTINGS].route_prefix, session.id)
    if whip:
        response = web.Response(status=201, text=answer, content_type="application/sdp")
        response.headers["Location"] = urls["resource"]
        response.headers["ETag"] = session.etag
        for link in [*_ice_links(request), f'<{urls["whep"]}>; rel="whep"', f'<{urls["view"]}>; rel="alternate"']:
            response.headers.add("Link", link)
        return response
    return web.json_response({"sdp": answer, "type": "answer", "session_id": session.id, **urls, "etag": session.etag})


@operation(
    security=BEARER,
    query=[{"name": "config", "in": "query", "schema": {"type": "object"}, "style": "form"}],
    request={"application/sdp": SDP},
    responses={201: WHIP_CREATED},
    errors=(400, 401, 413, 415, 422, 503),
)
async def whip(request: web.Request) -> web.Response:
    """WHIP (RFC 9725): an application/sdp offer (sendrecv, or sendonly to watch through WHEP).

    The WHIP endpoint (RFC 9725): application/sdp offers only."""
    if request.content_type != "application/sdp":
        raise WrongType("a WHIP offer is application/sdp", "Content-Type")
    return await offer(request)


@operation(security=OPERATOR, responses={200: (SessionList, "the sessions")}, errors=(401, 403))
async def list_sessions(request: web.Request) -> web.Response:
    """Every session (operators only).

    Operators only (the bearer token): every session, ids included."""
    _operator(request)
    return web.json_response({"sessions": [_describe(request, s) for s in request.app[SESSIONS].sessions.values()]})


@operation(parameters=SESSION, responses={200: (SessionDescription, "the session")}, errors=(404,))
async def get_session(request: web.Request) -> web.Response:
    return web.json_response(_describe(request, _session(request)))


@operation(
    security=BEARER,
    parameters=SESSION,
    request={"application/json": ConfigChange, "application/trickle-ice-sdpfrag": SDP},
    responses={200: (SessionDescription, "the session (a config change)"), 204: "candidates added (trickle ICE)"},
    errors=(400, 401, 404, 412, 413, 422, 428),
)
async def patch_session(request: web.Request) -> web.Response:
    """Change the session's config (JSON), or trickle ICE candidates (WHIP, with If-Match).

    JSON {config} changes the config; application/trickle-ice-sdpfrag trickles ICE candidates (WHIP)."""
    _authorize(request)
    session = _session(request)
    if request.content_type == "application/trickle-ice-sdpfrag":
        return await _trickle(request, session)
    data = await _body(request, MAX_MESSAGE_BYTES, "config change")
    change = validated(ConfigChange, parse_json(data))
    request.app[SESSIONS].update(session, change.changes())
    return web.json_response(_describe(request, session))


async def _trickle(request: web.Request, session: Session) -> web.Response:
    match = request.headers.get("If-Match")
    if match is None:
        raise HTTPError(428, "a trickle-ICE PATCH needs If-Match with the session's ETag", "If-Match")
    if match != "*" and match != session.etag:
        raise HTTPError(412, "If-Match does not match the session's ETag", "If-Match")
    fragment = parse_fragment(decode_text(await _body(request, MAX_MESSAGE_BYTES, "sdpfrag"), "sdpfrag"))
    if match == "*" and fragment.ufrag is None:
        raise Invalid("If-Match: * asks for an ICE restart, which needs new ICE credentials", "sdpfrag")
    await trickle(session.pc, fragment)
    return web.Response(status=204)


@operation(
    parameters=SESSION,
    request={"application/sdp": SDP},
    responses={
        201: {
            "description": "the answer; Location ends the player",
            "headers": {"Location": {"schema": {"type": "string"}}},
            "content": {"application/sdp": {"schema": SDP}},
        }
    },
    errors=(400, 404, 413, 415, 422, 503),
)
async def whep_play(request: web.Request) -> web.Response:
    """WHEP: a player's recvonly offer for the session's processed video.

    A WHEP player's recvonly offer (application/sdp) -> 201 with the answer; Location ends it."""
    session = _session(request)
    if request.content_type != "application/sdp":
        raise WrongType("a WHEP offer is application/sdp", "Content-Type")
    sdp = _sdp(decode_text(await _body(request, request.app[SETTINGS].max_offer_bytes, "offer"), "sdp"))
    try:
        player, answer = await request.app[SESSIONS].play(session, sdp)
    except RequestError:
        raise
    except Exception as exc:  # aiortc raises ValueError and friends on SDP it cannot use
        raise Malformed(f"unusable SDP offer: {str(exc)[:200]}", "sdp") from None
    response = web.Response(status=201, text=answer, content_type="application/sdp")
    response.headers["Location"] = player_url(request.app[SETTINGS].route_prefix, session.id, player.id)
    for link in _ice_links(request):
        response.headers.add("Link", link)
    return response


@operation(parameters=SESSION, responses={204: "the player ended"}, errors=(404,))
async def whep_stop(request: web.Request) -> web.Response:
    session = _session(request)
    if not await session.players.stop(request.match_info["player"]):
        raise NotFound("no such player")
    return web.Response(status=204)


@operation(security=BEARER, parameters=SESSION, responses={204: "ended"}, errors=(401, 404))
async def delete_session(request: web.Request) -> web.Response:
    _authorize(request)
    _session(request)
    await request.app[SESSIONS].close(request.match_info["id"], reason="hung up")
    return web.Response(status=204)


@operation(
    request={
        "image/*": {"type": "string", "format": "binary"},
        "multipart/form-data": {
            "type": "object",
            "properties": {"file": {"type": "string", "format": "binary"}},
            "required": ["file"],
        },
    },
    responses={201: (Upload, "kept")},
    errors=(400, 413, 415, 507),
)
async def upload_background(request: web.Request) -> web.Response:
    """Upload a background image.

    Raw image body, or multipart with a `file` field -> 201 {id}."""
    settings = request.app[SETTINGS]
    store = request.app[PIPELINE].backgrounds
    if request.content_length is not None and request.content_length > settings.max_upload_bytes:
        raise TooLarge(f"upload larger than {settings.max_upload_bytes} bytes")
    if request.content_type.startswith("multipart/"):
        try:
            form = await request.post()
        except (ValueError, HttpProcessingError) as exc:  # aiohttp's multipart parser on a malformed body
            raise Malformed(f"malformed multipart body: {str(exc)[:200]}", "file") from None
        item = form.get("file")
        if not isinstance(item, web.FileField):
            raise Malformed("multipart upload needs a 'file' field", "file")
        data = item.file.read()
    else:
        data = await _body(request, settings.max_upload_bytes, "upload")
    if not data:
        raise Malformed("empty upload", "file")
    try:
        name = await asyncio.get_running_loop().run_in_executor(
            request.app[IMAGES], store.add, data, settings.max_upload_pixels
        )
    except ImageTooLarge as exc:
        raise TooLarge(str(exc), "file") from None
    except UnreadableImage as exc:
        raise WrongType(str(exc), "file") from None
    except BackgroundsFull as exc:
        raise HTTPError(507, str(exc)) from None
    height, width = store.get(name).shape[:2]
    return web.json_response({"id": name, "width": width, "height": height}, status=201)


@operation(responses={200: (BackgroundList, "presets (and uploads, for operators)")})
async def list_backgrounds(request: web.Request) -> web.Response:
    """The presets; an upload's id is known only to its uploader (operators with the token see them all)."""
    store = request.app[PIPELINE].backgrounds
    listed = store.presets()
    if _is_operator(request):
        listed += store.uploads()
    return web.json_response({"presets": store.presets(), "backgrounds": listed})


@operation(
    responses={200: {"description": "the image", "content": {"image/png": {"schema": {"type": "string"}}}}},
    errors=(404,),
)
async def get_background(request: web.Request) -> web.Response:
    store = request.app[PIPELINE].backgrounds
    name = request.match_info["id"]
    if name not in store:
        raise NotFound("no such background")
    try:
        png = await asyncio.get_running_loop().run_in_executor(request.app[IMAGES], store.png, name)
    except KeyError:  # evicted meanwhile
        raise NotFound("no such background") from None
    return web.Response(body=png, content_type="image/png")


@operation(responses={200: (ModelList, "what config.model may name")})
async def list_models(request: web.Request) -> web.Response:
    """The models a session's config may name (aliases first, as the page shows them)."""
    registry = request.app[PIPELINE].registry
    names = registry.choices()
    infos = [registry.info(n) for n in names]
    models = [
        {"name": n, "input_size": list(i.input_size), "description": i.description}
        for n, i in zip(names, infos, strict=True)
    ]
    return web.json_response({"models": models, "default": request.app[SETTINGS].default_model})


@operation(responses={200: (Defaults, "the config of a new session")})
async def config_defaults(request: web.Request) -> web.Response:
    """The config a new session gets unless its offer says otherwise: the page starts from it."""
    settings = request.app[SETTINGS]
    config = SessionConfig(model=settings.default_model)
    return web.json_response({"config": config.model_dump(), "token_required": bool(settings.tokens)})


@not_in_api("the document itself")
async def openapi(request: web.Request) -> web.Response:
    """This API's OpenAPI 3.1 document."""
    return web.json_response(OPENAPI)


@operation(responses={200: (Health, "serving"), 503: (Health, "draining: send new offers elsewhere")})
async def healthz(request: web.Request) -> web.Response:
    """200 while serving; 503 while draining, so that proxies and Kubernetes send new offers elsewhere."""
    pipeline, sessions = request.app[PIPELINE], request.app[SESSIONS]
    return web.json_response(
        {
            "status": "draining" if sessions.draining else "ok",
            "device": str(pipeline.device),
            "fp16": pipeline.half,
            "sessions": len(sessions.sessions),
            "max_sessions": request.app[SETTINGS].max_sessions,
            "workers": request.app[WORKERS].workers,
            "torch_threads": request.app[TORCH_THREADS],
            "vp8_speed": sessions.speed.speed,
        },
        status=503 if sessions.draining else 200,
    )


@operation(
    responses={
        200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}
    }
)
async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS]
    return web.Response(body=registry.render(), headers={"Content-Type": registry.content_type})


@not_in_api("the demo page")
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


@not_in_api("a page: the viewer of a session")
async def view(request: web.Request) -> web.FileResponse:
    """The viewer page of a session (a Browser Source for OBS): it plays the session's WHEP stream."""
    return web.FileResponse(STATIC / "view.html")


def _preflight(methods: str, **accept: str) -> Handler:
    """A CORS preflight's OPTIONS answer (cors.py): no operation of the API."""
    return not_in_api("CORS preflight")(preflight(methods, **accept))


# Every route, and (openapi.py) the API's document: each handler declares its operation, or that it is none.
ROUTES = [
    web.get("/", index),
    web.get("/view/{id}", view),
    web.post("/offer", offer),
    web.options("/offer", _preflight("POST, OPTIONS", accept_post="application/sdp, application/json")),
    web.post("/whip", whip),
    web.options("/whip", _preflight("POST, OPTIONS", accept_post="application/sdp")),
    web.get("/sessions", list_sessions),
    web.get("/sessions/{id}", get_session),
    web.patch("/sessions/{id}", patch_session),
    web.delete("/sessions/{id}", delete_session),
    web.options(
        "/sessions/{id}",
        _preflight("GET, PATCH, DELETE, OPTIONS", accept_patch="application/trickle-ice-sdpfrag, application/json"),
    ),
    web.post("/sessions/{id}/whep", whep_play),
    web.options("/sessions/{id}/whep", _preflight("POST, OPTIONS", accept_post="application/sdp")),
    web.delete("/sessions/{id}/whep/{player}", whep_stop),
    web.options("/sessions/{id}/whep/{player}", _preflight("DELETE, OPTIONS")),
    web.post("/backgrounds", upload_background),
    web.get("/backgrounds", list_backgrounds),
    web.get("/backgrounds/{id}", get_background),
    web.get("/models", list_models),
    web.get("/config/defaults", config_defaults),
    web.get("/openapi.json", openapi),
    web.get("/healthz", healthz),
    web.get("/metrics", metrics),
    web.static("/static", STATIC),
]
OPENAPI = document(ROUTES)
