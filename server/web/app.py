"""The application factory: settings in, an aiohttp app out, each resource in a cleanup context of its own.

aiohttp runs a context's clean-up only if its start-up finished, and in reverse order, so sessions
close before the workers stop, and the torch thread count is put back whatever failed after it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from aiohttp import web

from ..pipeline.pipeline import Pipeline
from ..pipeline.workers import PipelineWorkers, worker_layout
from ..rtc.encoders import EncoderSettings
from ..rtc.policy import SessionPolicy
from ..rtc.sessions import SessionManager
from .agent import agent
from .cors import cors
from .errors import json_errors
from .keys import IMAGES, METRICS, PIPELINE, SESSIONS, SETTINGS, TORCH_THREADS, WORKERS
from .metrics import Metrics
from .routes import ROUTES
from .settings import ServerSettings

log = logging.getLogger(__name__)
Context = Callable[[web.Application], AsyncIterator[None]]


def pipeline_from(settings: ServerSettings) -> Pipeline:
    return Pipeline(device=settings.device, half=settings.fp16, compile=bool(settings.compile))


def _pipeline(pipeline: Pipeline | None) -> Context:
    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        app[PIPELINE] = pipeline or pipeline_from(settings)
        store = app[PIPELINE].backgrounds
        store.budget_bytes, store.max_side = settings.upload_budget_mb * 2**20, settings.max_background_side
        yield

    return context


async def _images(app: web.Application) -> AsyncIterator[None]:
    """One thread for image decoding and encoding: each thread that allocates large buffers gets malloc
    arenas of its own that keep freed memory (70 uploads of a 4000x4000 JPEG grew the server by 423 MB
    on asyncio's default executor, by 336 MB on one thread, against a 256 MiB budget)."""
    app[IMAGES] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="images")
    yield
    app[IMAGES].shutdown(wait=True, cancel_futures=True)


async def _torch_threads(app: web.Application) -> AsyncIterator[None]:
    """Torch's thread count for the workers' layout; process-wide, so put back when the app closes."""
    _, threads = worker_layout(app[PIPELINE].device, app[SETTINGS].workers, app[SETTINGS].cores)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    app[TORCH_THREADS] = threads
    try:
        yield
    finally:
        torch.set_num_threads(previous)


async def _models(app: web.Application) -> AsyncIterator[None]:
    """The served files registered, the default model checked, the preloaded models loaded (and compiled)."""
    settings, pipeline = app[SETTINGS], app[PIPELINE]
    served = [pipeline.registry.register_file(path) for path in settings.models]
    pipeline.registry.resolve(settings.default_model)  # an unknown default fails at start-up with the names
    for name in [*settings.preload, *served]:
        # Fail at start-up, not at the first call, when weights are missing; compile before listening.
        await asyncio.to_thread(pipeline.warm, name)
    yield


async def _metrics(app: web.Application) -> AsyncIterator[None]:
    app[METRICS] = Metrics(sessions=lambda: len(app[SESSIONS].sessions) if SESSIONS in app else 0)
    yield


async def _workers(app: web.Application) -> AsyncIterator[None]:
    settings, pipeline = app[SETTINGS], app[PIPELINE]
    count, threads = worker_layout(pipeline.device, settings.workers, settings.cores)
    workers = PipelineWorkers(pipeline, count, settings.max_batch, app[METRICS].observe_batch)
    log.info("pipeline: %d worker(s), %d torch thread(s) each, on %s", count, threads, pipeline.device)
    app[WORKERS] = workers
    yield
    await asyncio.to_thread(workers.close)


async def _sessions(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    policy = SessionPolicy(
        max_sessions=settings.max_sessions,
        media_timeout=settings.media_timeout,
        connect_timeout=settings.connect_timeout,
        ice_servers=tuple(settings.ice_servers),
        ice_username=settings.ice_username,
        ice_credential=settings.ice_credential,
        default_model=settings.default_model,
        max_players=settings.max_players,
        encoders=EncoderSettings(
            codec=settings.codec,
            max_bitrate=settings.max_bitrate * 1000,
            vp8_speed=settings.vp8_speed,
            vp8_speed_max=settings.vp8_speed_max,
            h264_preset=settings.h264_preset,
            start_bitrate=None if settings.start_bitrate is None else settings.start_bitrate * 1000,
            vp8_qmin=settings.vp8_qmin,
        ),
        fec=settings.fec,
    )
    # The cores whose overload raises VP8's speed: this process's share (its pipeline's, under --processes).
    manager = SessionManager(policy, app[WORKERS], app[METRICS].totals, cores=settings.cores)
    manager.start()
    app[SESSIONS] = manager
    store = app[PIPELINE].backgrounds
    store.in_use = manager.images_in_use  # an image a live session shows is never evicted
    # What start-up made (models, weights, libraries) lives as long as the process: keep it out of the
    # garbage collector's scans, so the collections after sessions end take milliseconds.
    gc.freeze()
    yield
    store.in_use = set
    await manager.close_all()
    gc.unfreeze()


def create_app(settings: ServerSettings | None = None, pipeline: Pipeline | None = None) -> web.Application:
    """The application; its pipeline, workers and sessions live and die with it."""
    settings = settings or ServerSettings()
    app = web.Application(
        middlewares=[cors, json_errors], client_max_size=max(settings.max_upload_bytes, settings.max_offer_bytes)
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.extend(
        [_pipeline(pipeline), _images, _torch_threads, _models, _metrics, _workers, _sessions, agent]
    )
    app.add_routes(ROUTES)
    return app


def run_server(settings: ServerSettings) -> None:
    """Serve until SIGINT, or SIGTERM and a drain (see `serve`); start-up errors (a bad --model, missing
    weights) propagate to the caller."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(settings))


async def serve(settings: ServerSettings) -> None:
    """Listen until SIGINT (stop at once) or SIGTERM: then drain, i.e. answer new offers and /healthz with
    503 while the live sessions run on, until they end or --drain-timeout passes; then close what is left and
    return. A second SIGTERM stops at once."""
    context = None
    if settings.cert and settings.key:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.cert, settings.key)
    pipeline = pipeline_from(settings)
    scheme = "https" if context else "http"
    address = f"{scheme}://{'localhost' if settings.host in ('0.0.0.0', '::') else settings.host}:{settings.port}"
    if pipeline.compile:
        print(
            f"Backdrop: compiling the models for the CPU before serving on {address} (--no-compile skips this)",
            flush=True,
        )
    app = create_app(settings, pipeline)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()  # the resources (and compiles) are ready when this returns
    try:
        await web.TCPSite(runner, settings.host, settings.port, ssl_context=context).start()
        print(f"Backdrop on {address} (device {pipeline.device})", flush=True)
        await _until_stopped(app[SESSIONS], settings.drain_timeout)
    finally:
        await runner.cleanup()  # closes the sessions left, the workers, the pipeline's resources


async def _until_stopped(sessions: SessionManager, drain_timeout: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    drain: asyncio.Task | None = None

    def on_term() -> None:
        nonlocal drain
        if drain is not None:  # the second SIGTERM
            log.info("second SIGTERM: stopping now")
            stop.set()
            return
        log.info("SIGTERM: draining (%d live session(s), up to %g s)", len(sessions.sessions), drain_timeout)
        drain = loop.create_task(sessions.drain(drain_timeout))
        drain.add_done_callback(lambda _: stop.set())

    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        await stop.wait()
    finally:
        # Stopping already: a late SIGTERM (a supervisor's second, a Kubernetes retry) must not kill the
        # process half-way through closing its sessions with the default action.
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, log.info, "signal %d: stopping already", signum)
        if drain is not None and not drain.done():
            drain.cancel()
        if drain is not None and drain.done() and not drain.cancelled():
            log.info("drained; %d session(s) left to close", drain.result())
