"""The OpenAPI 3.1 document of the HTTP API, made from the same pydantic models the routes parse."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .schemas import (
    Answer,
    BackgroundList,
    ConfigChange,
    Defaults,
    Error,
    Health,
    ModelList,
    OfferRequest,
    SessionDescription,
    SessionList,
    Upload,
)

MODELS: list[type[BaseModel]] = [
    Answer,
    BackgroundList,
    ConfigChange,
    Defaults,
    Error,
    Health,
    ModelList,
    OfferRequest,
    SessionDescription,
    SessionList,
    Upload,
]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "malformed: not JSON, not UTF-8, nested too deep, not an SDP offer",
        401: "no or wrong operator token",
        403: "listings are off (no --operator-token)",
        404: "no such session or background",
        413: "too large",
        415: "not an image",
        422: "well-formed but invalid: the field at fault is named",
        503: "the session limit is reached",
        507: "the uploads' memory budget is full of images in use",
    }
    return {str(status): _json(Error, texts[status]) for status in statuses}


SESSION_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the session's id, as its creator was told",
}


def document() -> dict[str, Any]:
    """The whole document, as `GET /openapi.json` serves it."""
    _, schemas = models_json_schema(
        [(model, "validation") for model in MODELS], ref_template="#/components/schemas/{model}"
    )
    operator: list[dict[str, list[str]]] = [{"operator": []}]
    paths: dict[str, Any] = {
        "/offer": {
            "post": {
                "summary": "Start a session: an SDP offer in, the answer out",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref(OfferRequest)},
                        "application/sdp": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "200": _json(Answer, "the answer (JSON offers)"),
                    "201": {
                        "description": "the answer (WHIP: an application/sdp offer, config in the query string)",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": {"application/sdp": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 413, 422, 503),
                },
            }
        },
        "/sessions": {
            "get": {
                "summary": "Every session (operators only)",
                "security": operator,
                "responses": {"200": _json(SessionList, "the sessions"), **_errors(401, 403)},
            }
        },
        "/sessions/{id}": {
            "parameters": [SESSION_ID],
            "get": {"responses": {"200": _json(SessionDescription, "the session"), **_errors(404)}},
            "patch": {
                "summary": "Change the session's config",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(ConfigChange)}}},
                "responses": {"200": _json(SessionDescription, "the session"), **_errors(400, 404, 413, 422)},
            },
            "delete": {"responses": {"204": {"description": "ended"}, **_errors(404)}},
        },
        "/backgrounds": {
            "get": {"responses": {"200": _json(BackgroundList, "presets (and uploads, for operators)")}},
            "post": {
                "summary": "Upload a background image",
                "requestBody": {
                    "required": True,
                    "content": {
                        "image/*": {"schema": {"type": "string", "format": "binary"}},
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {"file": {"type": "string", "format": "binary"}},
                                "required": ["file"],
                            }
                        },
                    },
                },
                "responses": {"201": _json(Upload, "kept"), **_errors(400, 413, 415, 507)},
            },
        },
        "/backgrounds/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {
                "responses": {
                    "200": {"description": "the image", "content": {"image/png": {"schema": {"type": "string"}}}},
                    **_errors(404),
                }
            },
        },
        "/models": {"get": {"responses": {"200": _json(ModelList, "what config.model may name")}}},
        "/config/defaults": {"get": {"responses": {"200": _json(Defaults, "the config of a new session")}}},
        "/healthz": {"get": {"responses": {"200": _json(Health, "serving")}}},
        "/metrics": {
            "get": {
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                }
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Backdrop", "version": "1", "description": "Background replacement for WebRTC video."},
        "paths": paths,
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {"operator": {"type": "http", "scheme": "bearer", "description": "--operator-token"}},
        },
    }
