"""The aiohttp application: signalling, sessions API, backgrounds, health, metrics and the demo page."""

from __future__ import annotations

import argparse
import json
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import torch
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from models import WeightsMissingError, model_info, model_names, register_file, resolve_name

from .backgrounds import BackgroundError
from .batcher import FrameBatcher, worker_layout
from .pipeline import Pipeline
from .sessions import ConfigError, SessionLimitError, SessionManager
from .settings import ServerSettings, settings_from_args

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent.parent / "static"

PIPELINE = web.AppKey("pipeline", Pipeline)
SESSIONS = web.AppKey("sessions", SessionManager)
SETTINGS = web.AppKey("settings", ServerSettings)
REGISTRY = web.AppKey("registry", CollectorRegistry)


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    body = {"error": message}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status)


@web.middleware
async def json_errors(request: web.Request, handler) -> web.StreamResponse:
    """Every error leaves as JSON with a message, including aiohttp's own (404, 405, 413)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return _error(exc.status, exc.reason if exc.status != 413 else "request body too large")


async def _json_body(request: web.Request) -> dict:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text=json.dumps({"error": "body is not valid JSON"}), content_type="application/json")
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "body must be a JSON object"}), content_type="application/json")
    return data


def _session_or_404(request: web.Request):
    session = request.app[SESSIONS].sessions.get(request.match_info["id"])
    if session is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such session"}), content_type="application/json")
    return session


async def offer(request: web.Request) -> web.Response:
    """JSON {sdp, type: offer, config} -> 200 {sdp, type: answer, session_id}; raw application/sdp (WHIP) -> 201."""
    settings = request.app[SETTINGS]
    if request.content_length is not None and request.content_length > settings.max_offer_bytes:
        return _error(413, f"offer larger than {settings.max_offer_bytes} bytes")
    whip = request.content_type == "application/sdp"
    if whip:
        sdp, changes = await request.text(), dict(request.query)
        changes = {k: _query_value(v) for k, v in changes.items()}
    else:
        data = await _json_body(request)
        if data.get("type") != "offer":
            return _error(400, "type must be 'offer'", "type")
        sdp, changes = data.get("sdp"), data.get("config", {})
    if not isinstance(sdp, str) or not sdp.strip().startswith("v="):
        return _error(400, "sdp must be an SDP offer (starting with 'v=')", "sdp")
    try:
        session, answer = await request.app[SESSIONS].create(sdp, changes)
    except ConfigError as exc:
        return _error(400, str(exc), exc.field)
    except SessionLimitError as exc:
        return _error(503, str(exc))
    except WeightsMissingError as exc:
        return _error(500, str(exc))
    except Exception as exc:  # aiortc raises ValueError and friends on SDP it cannot use
        log.info("rejected offer: %s", exc)
        return _error(400, f"unusable SDP offer: {exc}", "sdp")
    if whip:
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": f"/sessions/{session.id}"})  # fmt: skip
    return web.json_response({"sdp": answer, "type": "answer", "session_id": session.id})


def _query_value(value: str) -> object:
    """Query-string config values (WHIP has no JSON body): numbers and booleans parsed, the rest strings."""
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return float(value)
    except ValueError:
        return value


async def list_sessions(request: web.Request) -> web.Response:
    return web.json_response({"sessions": [s.describe() for s in request.app[SESSIONS].sessions.values()]})


async def get_session(request: web.Request) -> web.Response:
    return web.json_response(_session_or_404(request).describe())


async def patch_session(request: web.Request) -> web.Response:
    session = _session_or_404(request)
    data = await _json_body(request)
    try:
        request.app[SESSIONS].update(session, data.get("config", data))
    except ConfigError as exc:
        return _error(400, str(exc), exc.field)
    return web.json_response(session.describe())


async def delete_session(request: web.Request) -> web.Response:
    _session_or_404(request)
    await request.app[SESSIONS].close(request.match_info["id"], reason="hung up")
    return web.Response(status=204)


async def upload_background(request: web.Request) -> web.Response:
    """Raw image body, or multipart with a `file` field -> 201 {id}."""
    settings = request.app[SETTINGS]
    store = request.app[PIPELINE].backgrounds
    if request.content_length is not None and request.content_length > settings.max_upload_bytes:
        return _error(413, f"upload larger than {settings.max_upload_bytes} bytes")
    if request.content_type.startswith("multipart/"):
        form = await request.post()
        item = form.get("file")
        if item is None or not hasattr(item, "file"):
            return _error(400, "multipart upload needs a 'file' field", "file")
        data = item.file.read()
    else:
        data = await request.read()
    if not data:
        return _error(400, "empty upload", "file")
    try:
        name = store.add(data, settings.max_upload_pixels)
    except BackgroundError as exc:
        return _error(exc.status, str(exc), "file")
    height, width = store.get(name).shape[:2]
    return web.json_response({"id": name, "width": width, "height": height}, status=201)


async def list_backgrounds(request: web.Request) -> web.Response:
    store = request.app[PIPELINE].backgrounds
    return web.json_response({"presets": store.presets(), "backgrounds": store.names()})


async def get_background(request: web.Request) -> web.Response:
    store = request.app[PIPELINE].backgrounds
    name = request.match_info["id"]
    if name not in store:
        return _error(404, "no such background")
    return web.Response(body=store.png(name), content_type="image/png")


async def list_models(request: web.Request) -> web.Response:
    """The models a session's config may name (aliases first, as the page shows them)."""
    names = ["general", "landscape"] + [n for n in model_names() if not n.startswith("mediapipe-")]
    models = [{"name": n, "input_size": list(model_info(n).input_size), "description": model_info(n).description} for n in names]
    return web.json_response({"models": models, "default": request.app[SETTINGS].default_model})


async def healthz(request: web.Request) -> web.Response:
    pipeline = request.app[PIPELINE]
    return web.json_response({
        "status": "ok",
        "device": str(pipeline.device),
        "fp16": pipeline.half,
        "sessions": len(request.app[SESSIONS].sessions),
        "max_sessions": request.app[SETTINGS].max_sessions,
        "workers": request.app[SESSIONS].batcher.workers,
        "torch_threads": torch.get_num_threads(),
    })  # fmt: skip


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(request.app[REGISTRY]), headers={"Content-Type": CONTENT_TYPE_LATEST})


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
    web.get("/healthz", healthz),
    web.get("/metrics", metrics),
    web.static("/static", STATIC),
]


def _metrics_registry(app: web.Application) -> CollectorRegistry:
    registry = CollectorRegistry()

    def sessions() -> list:
        return list(app[SESSIONS].sessions.values())

    Gauge("backdrop_sessions", "open sessions", registry=registry).set_function(lambda: len(sessions()))
    for name, text in [("frames_in", "frames received"), ("frames_out", "frames sent"), ("frames_dropped", "stale frames dropped")]:
        gauge = Gauge(f"backdrop_{name}", f"{text} by the open sessions", registry=registry)
        gauge.set_function(lambda key=name: sum(getattr(s.track.stats, key) for s in sessions() if s.track))
    return registry


def create_app(settings: ServerSettings | None = None, pipeline: Pipeline | None = None) -> web.Application:
    """The application; the pipeline and the sessions live and die with it (cleanup_ctx)."""
    settings = settings or ServerSettings()
    app = web.Application(middlewares=[json_errors], client_max_size=max(settings.max_upload_bytes, settings.max_offer_bytes))
    app[SETTINGS] = settings

    async def resources(app: web.Application) -> AsyncIterator[None]:
        app[PIPELINE] = pipeline or Pipeline()
        workers, threads = worker_layout(app[PIPELINE].device, settings.workers)
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)  # process-wide; put back when the app closes or fails to start
        try:
            served = [register_file(path) for path in settings.models]
            resolve_name(settings.default_model)  # an unknown default fails at start-up with the list of names
            for name in [*settings.preload, *served]:
                app[PIPELINE].warm(name)  # fail at start-up, not at the first call, when weights are missing
            batcher = FrameBatcher(app[PIPELINE], settings.max_batch, workers)
            batcher.start()
            log.info("pipeline: %d worker(s), %d torch thread(s) each, on %s", workers, threads, app[PIPELINE].device)
            app[SESSIONS] = SessionManager(settings, batcher, app[PIPELINE].backgrounds)
            app[SESSIONS].start()
            app[REGISTRY] = _metrics_registry(app)
            yield
            await app[SESSIONS].close_all()
            await batcher.close()
        finally:
            torch.set_num_threads(previous_threads)

    app.cleanup_ctx.append(resources)
    app.add_routes(ROUTES)
    return app


def run_server(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from_args(args)
    context = None
    if settings.cert:
        if not settings.key:
            raise SystemExit("--cert needs --key")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.cert, settings.key)
    pipeline = Pipeline(device=args.device, half=args.fp16, compile=args.compile)
    scheme = "https" if context else "http"
    address = f"{scheme}://{'localhost' if settings.host in ('0.0.0.0', '::') else settings.host}:{settings.port}"
    if pipeline.compile:
        print(f"Backdrop: compiling the models for the CPU before serving on {address} (--no-compile skips this)", flush=True)
    app = create_app(settings, pipeline)

    async def announce(app: web.Application) -> None:  # runs after the resources (and compiles) are ready
        print(f"Backdrop on {address} (device {pipeline.device})", flush=True)

    app.on_startup.append(announce)
    try:
        web.run_app(app, host=settings.host, port=settings.port, ssl_context=context, print=None)
    except (FileNotFoundError, ValueError, KeyError) as exc:  # bad --model / --default-model, raised at start-up
        raise SystemExit(f"error: {exc.args[0] if exc.args else exc}") from None
    return 0
