"""The HTTP API and the demo page: handlers and the one table of routes."""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from models.images import ImageTooLarge, UnreadableImage
from models.weights import WeightsMissingError

from ..pipeline.config import SessionConfig
from ..rtc.sessions import ConfigError, Session, SessionLimitError
from .errors import ApiError
from .keys import METRICS, PIPELINE, SESSIONS, SETTINGS, TORCH_THREADS, WORKERS

log = logging.getLogger(__name__)
# The page ships inside the package (static/ at the top of the source tree, mapped to server.web.static).
STATIC = Path(str(resources.files("server.web.static")))


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.read())
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested deeper than the parser goes
        raise ApiError(400, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object")
    return data


def _session(request: web.Request) -> Session:
    session = request.app[SESSIONS].sessions.get(request.match_info["id"])
    if session is None:
        raise ApiError(404, "no such session")
    return session


async def offer(request: web.Request) -> web.Response:
    """JSON {sdp, type: offer, config} -> 200 {sdp, type: answer, session_id}; raw application/sdp (WHIP) -> 201."""
    settings = request.app[SETTINGS]
    if request.content_length is not None and request.content_length > settings.max_offer_bytes:
        raise ApiError(413, f"offer larger than {settings.max_offer_bytes} bytes")
    whip = request.content_type == "application/sdp"
    changes: object
    if whip:
        try:
            sdp: object = (await request.read()).decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "the SDP offer is not UTF-8 text", "sdp") from None
        changes = dict(request.query)  # strings; the config's fields convert them ("0.3", "true")
    else:
        data = await _json_body(request)
        if data.get("type") != "offer":
            raise ApiError(400, "type must be 'offer'", "type")
        sdp, changes = data.get("sdp"), data.get("config", {})
    if not isinstance(sdp, str) or not sdp.strip().startswith("v="):
        raise ApiError(400, "sdp must be an SDP offer (starting with 'v=')", "sdp")
    try:
        session, answer = await request.app[SESSIONS].create(sdp, changes)
    except ConfigError as exc:
        raise ApiError(400, str(exc), exc.field) from None
    except SessionLimitError as exc:
        raise ApiError(503, str(exc)) from None
    except WeightsMissingError as exc:
        raise ApiError(500, str(exc)) from None
    except Exception as exc:  # aiortc raises ValueError and friends on SDP it cannot use
        log.info("rejected offer: %s", exc)
        raise ApiError(400, f"unusable SDP offer: {exc}", "sdp") from None
    if whip:
        return web.Response(
            status=201, text=answer, content_type="application/sdp", headers={"Location": f"/sessions/{session.id}"}
        )
    return web.json_response({"sdp": answer, "type": "answer", "session_id": session.id})


async def list_sessions(request: web.Request) -> web.Response:
    return web.json_response({"sessions": [s.describe() for s in request.app[SESSIONS].sessions.values()]})


async def get_session(request: web.Request) -> web.Response:
    return web.json_response(_session(request).describe())


async def patch_session(request: web.Request) -> web.Response:
    session = _session(request)
    data = await _json_body(request)
    try:
        request.app[SESSIONS].update(session, data.get("config", data))
    except ConfigError as exc:
        raise ApiError(400, str(exc), exc.field) from None
    return web.json_response(session.describe())


async def delete_session(request: web.Request) -> web.Response:
    _session(request)
    await request.app[SESSIONS].close(request.match_info["id"], reason="hung up")
    return web.Response(status=204)


async def upload_background(request: web.Request) -> web.Response:
    """Raw image body, or multipart with a `file` field -> 201 {id}."""
    settings = request.app[SETTINGS]
    store = request.app[PIPELINE].backgrounds
    if request.content_length is not None and request.content_length > settings.max_upload_bytes:
        raise ApiError(413, f"upload larger than {settings.max_upload_bytes} bytes")
    if request.content_type.startswith("multipart/"):
        form = await request.post()
        item = form.get("file")
        if not isinstance(item, web.FileField):
            raise ApiError(400, "multipart upload needs a 'file' field", "file")
        data = item.file.read()
    else:
        data = await request.read()
    if not data:
        raise ApiError(400, "empty upload", "file")
    try:
        name = store.add(data, settings.max_upload_pixels)
    except ImageTooLarge as exc:
        raise ApiError(413, str(exc), "file") from None
    except UnreadableImage as exc:
        raise ApiError(415, str(exc), "file") from None
    height, width = store.get(name).shape[:2]
    return web.json_response({"id": name, "width": width, "height": height}, status=201)


async def list_backgrounds(request: web.Request) -> web.Response:
    store = request.app[PIPELINE].backgrounds
    return web.json_response({"presets": store.presets(), "backgrounds": store.names()})


async def get_background(request: web.Request) -> web.Response:
    store = request.app[PIPELINE].backgrounds
    name = request.match_info["id"]
    if name not in store:
        raise ApiError(404, "no such background")
    return web.Response(body=store.png(name), content_type="image/png")


async def list_models(request: web.Request) -> web.Response:
    """The models a session's config may name (aliases first, as the page shows them)."""
    registry = request.app[PIPELINE].registry
    names = ["general", "landscape"] + [n for n in registry.names() if not n.startswith("mediapipe-")]
    infos = [registry.info(n) for n in names]
    models = [
        {"name": n, "input_size": list(i.input_size), "description": i.description}
        for n, i in zip(names, infos, strict=True)
    ]
    return web.json_response({"models": models, "default": request.app[SETTINGS].default_model})


async def config_defaults(request: web.Request) -> web.Response:
    """The config a new session gets unless its offer says otherwise: the page starts from it."""
    config = SessionConfig(model=request.app[SETTINGS].default_model)
    return web.json_response({"config": config.model_dump()})


async def healthz(request: web.Request) -> web.Response:
    pipeline = request.app[PIPELINE]
    return web.json_response(
        {
            "status": "ok",
            "device": str(pipeline.device),
            "fp16": pipeline.half,
            "sessions": len(request.app[SESSIONS].sessions),
            "max_sessions": request.app[SETTINGS].max_sessions,
            "workers": request.app[WORKERS].workers,
            "torch_threads": request.app[TORCH_THREADS],
        }
    )


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS]
    return web.Response(body=registry.render(), headers={"Content-Type": registry.content_type})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


ROUTES = [
    web.get("/", index),
    web.post("/offer", offer),
    web.get("/sessions", list_sessions),
    web.get("/sessions/{id}", get_session),
    web.patch("/sessions/{id}", patch_session),
    web.delete("/sessions/{id}", delete_session),
    web.post("/backgrounds", upload_background),
    web.get("/backgrounds", list_backgrounds),
    web.get("/backgrounds/{id}", get_background),
    web.get("/models", list_models),
    web.get("/config/defaults", config_defaults),
    web.get("/healthz", healthz),
    web.get("/metrics", metrics),
    web.static("/static", STATIC),
]
