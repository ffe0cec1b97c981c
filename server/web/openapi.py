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
        401: "no or wrong bearer token (--token, or --operator-token for listings)",
        405: "method not allowed",
        412: "If-Match does not match the session's ETag",
        428: "a trickle-ICE PATCH without If-Match",
        403: "listings are off (no --operator-token)",
        404: "no such session or background",
        413: "too large",
        415: "wrong content type (WHIP and WHEP take application/sdp; uploads are images)",
        422: "well-formed but invalid: the field at fault is named",
        503: "the session limit is reached",
        507: "the uploads' memory budget is full of images in use",
    }
    return {str(status): _json(Error, texts[status]) for status in statuses}


WHIP_CREATED = {
    "description": "the answer (WHIP: an application/sdp offer, config in the query string); Link headers name "
    "the ICE servers, the session's WHEP endpoint (rel=whep) and its viewer page (rel=alternate)",
    "headers": {
        "Location": {"schema": {"type": "string"}},
        "ETag": {"schema": {"type": "string"}},
        "Link": {"schema": {"type": "string"}},
    },
    "content": {"application/sdp": {"schema": {"type": "string"}}},
}
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
    bearer: list[dict[str, list[str]]] = [{"bearer": []}, {}]  # only when the server was given --token
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
                    "201": WHIP_CREATED,
                    **_errors(400, 401, 413, 422, 503),
                },
            }
        },
        "/whip": {
            "post": {
                "summary": "WHIP (RFC 9725): an application/sdp offer (sendrecv, or sendonly to watch through WHEP)",
                "security": bearer,
                "parameters": [{"name": "config", "in": "query", "schema": {"type": "object"}, "style": "form"}],
                "requestBody": {"required": True, "content": {"application/sdp": {"schema": {"type": "string"}}}},
                "responses": {"201": WHIP_CREATED, **_errors(400, 401, 413, 415, 422, 503)},
            }
        },
        "/sessions/{id}/whep": {
            "parameters": [SESSION_ID],
            "post": {
                "summary": "WHEP: a player's recvonly offer for the session's processed video",
                "requestBody": {"required": True, "content": {"application/sdp": {"schema": {"type": "string"}}}},
                "responses": {
                    "201": {
                        "description": "the answer; Location ends the player",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": {"application/sdp": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 404, 413, 415, 422, 503),
                },
            },
        },
        "/sessions/{id}/whep/{player}": {
            "parameters": [
                SESSION_ID,
                {"name": "player", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "delete": {"responses": {"204": {"description": "the player ended"}, **_errors(404)}},
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
                "summary": "Change the session's config (JSON), or trickle ICE candidates (WHIP, with If-Match)",
                "security": bearer,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref(ConfigChange)},
                        "application/trickle-ice-sdpfrag": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "200": _json(SessionDescription, "the session (a config change)"),
                    "204": {"description": "candidates added (trickle ICE)"},
                    **_errors(400, 401, 404, 412, 413, 422, 428),
                },
            },
            "delete": {"security": bearer, "responses": {"204": {"description": "ended"}, **_errors(401, 404)}},
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
        "/healthz": {
            "get": {
                "responses": {
                    "200": _json(Health, "serving"),
                    "503": _json(Health, "draining: send new offers elsewhere"),
                }
            }
        },
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
            "securitySchemes": {
                "operator": {"type": "http", "scheme": "bearer", "description": "--operator-token"},
                "bearer": {"type": "http", "scheme": "bearer", "description": "--token (WHIP)"},
            },
        },
    }
