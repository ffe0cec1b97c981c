"""Typed keys of what the application holds (aiohttp AppKeys), shared by its resources and its routes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from ..pipeline.pipeline import Pipeline
from ..pipeline.workers import PipelineWorkers
from ..rtc.sessions import SessionManager
from .metrics import Metrics
from .settings import ServerSettings

SETTINGS = web.AppKey("settings", ServerSettings)
IMAGES = web.AppKey("images", ThreadPoolExecutor)  # decodes uploads and encodes PNGs, off the event loop
PIPELINE = web.AppKey("pipeline", Pipeline)
TORCH_THREADS = web.AppKey("torch_threads", int)
METRICS = web.AppKey("metrics", Metrics)
WORKERS = web.AppKey("workers", PipelineWorkers)
SESSIONS = web.AppKey("sessions", SessionManager)
