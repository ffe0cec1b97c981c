"""The shapes of the HTTP API as pydantic models: what the routes parse, and what /openapi.json describes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..pipeline.config import SessionConfig
from ..rtc.messages import ConfigChange


def _no_defaults(schema: dict[str, Any]) -> None:
    for field in schema.get("properties", {}).values():
        field.pop("default", None)


class SessionConfigChange(SessionConfig):
    """Any subset of a session's config fields, each checked as in SessionConfig; unknown fields are refused.
    The fields left out keep their values (for a new session, the server's defaults: GET /config/defaults)."""

    # A partial SessionConfig: only the fields the client sent are applied (`changes`), so the defaults it
    # inherits are never used, and the schema does not show them.
    model_config = ConfigDict(json_schema_extra=_no_defaults)

    def changes(self) -> dict[str, Any]:
        """The fields the client sent, as checked values."""
        return self.model_dump(exclude_unset=True)


class OfferRequest(BaseModel):
    """`POST /offer` as JSON: the client's SDP offer and the session's config (any subset)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["offer"]
    sdp: str = Field(description="an SDP offer with a video track, starting with 'v='")
    config: SessionConfigChange = Field(
        default_factory=SessionConfigChange, description="SessionConfig fields to change"
    )


class Answer(BaseModel):
    sdp: str
    type: Literal["answer"]
    session_id: str = Field(description="the session's capability: keep it, nobody else is told")
    resource: str = Field(description="the session's URL (GET, PATCH, DELETE); behind a proxy it names the process")
    whep: str = Field(description="the session's WHEP endpoint: players POST recvonly offers there")
    view: str = Field(description="the viewer page of the session's processed video")
    etag: str = Field(description="the ICE session's entity tag, for If-Match of trickle-ICE PATCHes")


class Stats(BaseModel):
    model_config = ConfigDict(extra="allow")

    frames_in: int
    frames_out: int
    frames_dropped: int
    errors: int
    model_runs: int = Field(description="frames the model ran on (with config.keyframes, fewer than frames_out)")
    fps: float
    processing_ms_p50: float | None
    processing_ms_p95: float | None
    processing_ms_mean: float | None


class SessionDescription(BaseModel):
    id: str
    config: SessionConfig
    connection_state: str
    age_s: float
    returns_video: bool = Field(description="false for a sendonly (ingest) session: watch it through WHEP")
    resource: str = Field(description="the session's URL (GET, PATCH, DELETE); behind a proxy it names the process")
    whep: str = Field(description="the session's WHEP endpoint: players POST recvonly offers there")
    view: str = Field(description="the viewer page of the session's processed video")
    players: int = Field(description="WHEP players watching")
    stats: Stats


class SessionList(BaseModel):
    sessions: list[SessionDescription]


class Upload(BaseModel):
    id: str = Field(description="the upload's capability: use it as config.image; nobody else is told")
    width: int
    height: int


class BackgroundList(BaseModel):
    presets: list[str]
    backgrounds: list[str] = Field(description="the presets; with the operator token, the uploads too")


class ModelEntry(BaseModel):
    name: str
    input_size: list[int]
    description: str


class ModelList(BaseModel):
    models: list[ModelEntry]
    default: str


class Defaults(BaseModel):
    config: SessionConfig
    token_required: bool = Field(description="creating, changing or ending a session needs a bearer token")


class Health(BaseModel):
    status: Literal["ok", "draining"]
    device: str
    fp16: bool
    sessions: int
    max_sessions: int
    workers: int
    torch_threads: int
    vp8_speed: int = Field(description="VP8's encoding speed now: --vp8-speed, raised while the cores cannot keep up")


class Error(BaseModel):
    error: str
    field: str | None = Field(None, description="the part of the request at fault, e.g. config.blur")
    request_id: str | None = Field(None, description="on a 500: the id the server logged the failure under")


__all__ = [
    "Answer",
    "BackgroundList",
    "ConfigChange",
    "Defaults",
    "Error",
    "Health",
    "ModelList",
    "OfferRequest",
    "SessionConfigChange",
    "SessionDescription",
    "SessionList",
    "Upload",
]
