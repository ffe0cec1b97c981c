"""The OpenAPI 3.1 document of the HTTP API, made from the route table and the pydantic models the routes parse.

Each handler in the table carries its operation, declared beside it with `@operation(...)`: the bodies it
takes and answers (pydantic models, or plain schemas), its error statuses, who may call it. Its summary is
the first paragraph of the handler's docstring; the paths, their methods and path parameters come from the
table. A handler that is no operation of the API (a page, a CORS preflight) says so with `@not_in_api`, and
`document` refuses a table with a route that does neither.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .schemas import Error

H = TypeVar("H", bound=Callable[..., Any])
# A body: a pydantic model (a $ref to its schema), or a schema written out.
Body = type[BaseModel] | dict[str, Any]
# A response: its description alone, a JSON model and its description, or the response object written out.
Response = str | tuple[type[BaseModel], str] | dict[str, Any]
Security = list[dict[str, list[str]]]

SDP: dict[str, Any] = {"type": "string"}  # application/sdp and trickle-ICE fragments are text
OPERATOR: Security = [{"operator": []}]
BEARER: Security = [{"bearer": []}, {}]  # only when the server was given --token
ATTRIBUTE = "__openapi__"  # where a handler keeps its Operation (or NotInApi)

ERRORS = {
    400: "malformed: not JSON, not UTF-8, nested too deep, not an SDP offer",
    401: "no or wrong bearer token (--token, or --operator-token for listings)",
    403: "listings are off (no --operator-token)",
    404: "no such session or background",
    405: "method not allowed",
    412: "If-Match does not match the session's ETag",
    413: "too large",
    415: "wrong content type (WHIP and WHEP take application/sdp; uploads are images)",
    422: "well-formed but invalid: the field at fault is named",
    428: "a trickle-ICE PATCH without If-Match",
    503: "the session limit is reached",
    507: "the uploads' memory budget is full of images in use",
}


class UndocumentedRoute(Exception):
    """A route whose handler has neither `@operation` nor `@not_in_api`."""


@dataclass(frozen=True)
class Operation:
    """One method on one path, as the document describes it."""

    summary: str | None
    responses: Mapping[int, Response]
    request: Mapping[str, Body] = field(default_factory=dict)  # content type -> body; empty: none
    errors: tuple[int, ...] = ()  # statuses answered with an Error body (texts: ERRORS)
    security: Security | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)  # path parameter -> its description
    query: tuple[dict[str, Any], ...] = ()  # query parameters, written out

    def render(self, models: dict[str, type[BaseModel]]) -> dict[str, Any]:
        """The operation object; the models it names are added to `models`."""
        out: dict[str, Any] = {}
        if self.summary:
            out["summary"] = self.summary
        if self.security is not None:
            out["security"] = self.security
        if self.query:
            out["parameters"] = list(self.query)
        if self.request:
            content = {kind: {"schema": _schema(body, models)} for kind, body in self.request.items()}
            out["requestBody"] = {"required": True, "content": content}
        responses = {str(status): _response(response, models) for status, response in self.responses.items()}
        responses.update({str(status): _response((Error, ERRORS[status]), models) for status in self.errors})
        out["responses"] = responses
        return out


@dataclass(frozen=True)
class NotInApi:
    """A route that is no operation of the API, and why."""

    reason: str


def operation(
    *,
    responses: Mapping[int, Response],
    request: Mapping[str, Body] | None = None,
    errors: Iterable[int] = (),
    security: Security | None = None,
    parameters: Mapping[str, str] | None = None,
    query: Iterable[dict[str, Any]] = (),
) -> Callable[[H], H]:
    """Declare a handler's operation (its summary: the first paragraph of its docstring)."""
    statuses = tuple(errors)
    unknown = [status for status in statuses if status not in ERRORS]
    if unknown:
        raise ValueError(f"no text for error status {unknown} in openapi.ERRORS")

    def mark(handler: H) -> H:
        doc = Operation(
            summary=_summary(handler),
            responses=dict(responses),
            request=dict(request or {}),
            errors=statuses,
            security=security,
            parameters=dict(parameters or {}),
            query=tuple(query),
        )
        setattr(handler, ATTRIBUTE, doc)
        return handler

    return mark


def not_in_api(reason: str) -> Callable[[H], H]:
    """Declare a handler that is no operation of the API (a page, a CORS preflight): left out, on purpose."""

    def mark(handler: H) -> H:
        setattr(handler, ATTRIBUTE, NotInApi(reason))
        return handler

    return mark


def document(routes: Iterable[web.AbstractRouteDef]) -> dict[str, Any]:
    """The whole document of the route table, as `GET /openapi.json` serves it."""
    models: dict[str, type[BaseModel]] = {}
    operations: dict[str, dict[str, Operation]] = {}
    for route in routes:
        if isinstance(route, web.StaticDef):
            continue  # files under a prefix, not operations
        if not isinstance(route, web.RouteDef):
            raise UndocumentedRoute(f"{route!r}: not a route the document knows how to describe")
        doc = getattr(route.handler, ATTRIBUTE, None)
        if doc is None:
            name = getattr(route.handler, "__qualname__", repr(route.handler))
            raise UndocumentedRoute(
                f"{route.method} {route.path} ({name}): declare its @operation(...) or @not_in_api(reason)"
            )
        if isinstance(doc, Operation):
            operations.setdefault(route.path, {})[route.method.lower()] = doc
    paths: dict[str, Any] = {}
    for path, methods in operations.items():
        item: dict[str, Any] = {}
        names = re.findall(r"\{([^}:]+)", path)
        if names:
            item["parameters"] = [_path_parameter(name, methods.values()) for name in names]
        item.update({method: doc.render(models) for method, doc in methods.items()})
        paths[path] = item
    _, schemas = models_json_schema(
        [(models[name], "validation") for name in sorted(models)], ref_template="#/components/schemas/{model}"
    )
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


def _summary(handler: Callable[..., Any]) -> str | None:
    """The first paragraph of the handler's docstring, on one line, without its full stop."""
    text = inspect.getdoc(handler)
    return " ".join(text.split("\n\n")[0].split()).removesuffix(".") if text else None


def _schema(body: Body, models: dict[str, type[BaseModel]]) -> dict[str, Any]:
    if isinstance(body, dict):
        return body
    models[body.__name__] = body
    return {"$ref": f"#/components/schemas/{body.__name__}"}


def _response(response: Response, models: dict[str, type[BaseModel]]) -> dict[str, Any]:
    if isinstance(response, str):
        return {"description": response}
    if isinstance(response, tuple):
        model, text = response
        return {"description": text, "content": {"application/json": {"schema": _schema(model, models)}}}
    return response


def _path_parameter(name: str, operations: Iterable[Operation]) -> dict[str, Any]:
    parameter: dict[str, Any] = {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
    descriptions = [op.parameters[name] for op in operations if name in op.parameters]
    if descriptions:
        parameter["description"] = descriptions[0]
    return parameter
