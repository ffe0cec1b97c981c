"""Server settings: flags, each with a BACKDROP_* environment variable as its default."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pydantic import BaseModel, Field


class ServerSettings(BaseModel):
    """Everything the server needs besides the pipeline."""

    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    cert: Path | None = None
    key: Path | None = None
    ice_servers: list[str] = Field(default_factory=list)
    ice_username: str | None = None
    ice_credential: str | None = None
    max_sessions: int = Field(8, ge=1)
    media_timeout: float = Field(10.0, gt=0)
    connect_timeout: float = Field(20.0, gt=0)
    max_offer_bytes: int = Field(256 * 1024, ge=1024)
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_upload_pixels: int = Field(4096 * 4096, ge=1)
    max_batch: int = Field(16, ge=1)
    workers: int = Field(0, ge=0)
    preload: list[str] = Field(default_factory=lambda: ["general"])
    models: list[Path] = Field(default_factory=list)
    default_model: str = "general"


# (flag, field, type, help); the environment variable is BACKDROP_<FIELD>.
_OPTIONS: list[tuple[str, str, type, str]] = [
    ("--host", "host", str, "address to listen on"),
    ("--port", "port", int, "port to listen on"),
    ("--cert", "cert", Path, "TLS certificate (PEM); browsers need HTTPS for the camera except on localhost"),
    ("--key", "key", Path, "TLS private key (PEM) for --cert"),
    ("--ice-server", "ice_servers", str, "STUN/TURN URL offered to peers, repeatable (env: comma-separated)"),
    ("--ice-username", "ice_username", str, "username for the TURN servers"),
    ("--ice-credential", "ice_credential", str, "credential for the TURN servers"),
    ("--max-sessions", "max_sessions", int, "concurrent sessions; more are refused with 503"),
    ("--media-timeout", "media_timeout", float, "seconds without video before a session is closed"),
    ("--connect-timeout", "connect_timeout", float, "seconds for ICE/DTLS to connect before a session is closed as failed"),
    ("--max-offer-bytes", "max_offer_bytes", int, "largest accepted offer body (413 above)"),
    ("--max-upload-bytes", "max_upload_bytes", int, "largest accepted background upload (413 above)"),
    ("--max-upload-pixels", "max_upload_pixels", int, "largest accepted background image, in pixels (413 above)"),
    ("--max-batch", "max_batch", int, "most frames segmented in one batch across sessions"),
    ("--workers", "workers", int, "pipeline threads; 0: one per core on a CPU (torch single-threaded in each), one on CUDA"),
    ("--preload", "preload", str, "models loaded at start-up, repeatable (env: comma-separated)"),
    ("--model", "models", Path, "trained checkpoint (.pt) or exported .onnx to serve beside the built-in models, selectable by its name; repeatable (env: comma-separated)"),
    ("--default-model", "default_model", str, "model of sessions that do not choose one: general, landscape or a --model's name"),
]


def add_server_options(parser: argparse.ArgumentParser) -> None:
    defaults = ServerSettings()
    for flag, field, kind, text in _OPTIONS:
        env = f"BACKDROP_{field.upper()}"
        default = getattr(defaults, field)
        if isinstance(default, list):
            raw = os.environ.get(env)
            value = [v for v in raw.split(",") if v] if raw else None
            parser.add_argument(flag, dest=field, action="append", type=kind, default=None, help=f"{text} [{env}]")
            parser.set_defaults(**{f"_env_{field}": value})
        else:
            value = os.environ.get(env, default)
            parser.add_argument(flag, dest=field, type=kind, default=value, help=f"{text} (default: {default}) [{env}]")


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    values = {}
    for _, field, _, _ in _OPTIONS:
        value = getattr(args, field)
        if value is None:
            value = getattr(args, f"_env_{field}", None)
        if value is not None:
            values[field] = value
    return ServerSettings(**values)
