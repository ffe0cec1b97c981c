"""The API against its own OpenAPI document: the document is made from the route table, every route in it
documented (or declared no part of the API); Schemathesis generates requests from /openapi.json and checks
every answer (no 5xx, documented statuses and content types, bodies that match their schemas)."""

from __future__ import annotations

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server.web.openapi import ATTRIBUTE, NotInApi, Operation, UndocumentedRoute, document, not_in_api, operation
from server.web.routes import OPENAPI, ROUTES

from conftest import OPERATOR, ServerThread

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# SDP offers and trickle-ICE fragments are text: generate them as Schemathesis generates text/plain.
schemathesis.serializer.alias(["application/sdp", "application/trickle-ice-sdpfrag"], "text/plain")


@pytest.mark.unit
def test_every_route_in_the_table_is_documented_or_declared_no_part_of_the_api() -> None:
    routes = [route for route in ROUTES if isinstance(route, web.RouteDef)]
    undocumented = [f"{r.method} {r.path}" for r in routes if getattr(r.handler, ATTRIBUTE, None) is None]
    assert undocumented == []
    documented = {(r.method.lower(), r.path) for r in routes if isinstance(getattr(r.handler, ATTRIBUTE), Operation)}
    described = {(method, path) for path, item in OPENAPI["paths"].items() for method in item if method != "parameters"}
    assert described == documented and len(described) == 15
    left_out = {r.path for r in routes if isinstance(getattr(r.handler, ATTRIBUTE), NotInApi)}
    assert left_out == {"/", "/view/{id}", "/openapi.json"} | {r.path for r in routes if r.method == "OPTIONS"}


@pytest.mark.unit
def test_a_route_without_docs_is_refused() -> None:
    async def handler(request: web.Request) -> web.Response:
        """Say hello."""
        return web.Response(text="hello")

    with pytest.raises(UndocumentedRoute, match="GET /hello"):
        document([*ROUTES, web.get("/hello", handler)])
    hidden = document([*ROUTES, web.get("/hello", not_in_api("a test")(handler))])
    assert "/hello" not in hidden["paths"]
    shown = document([*ROUTES, web.get("/hello/{name}", operation(responses={200: "hello"}, errors=(404,))(handler))])
    assert shown["paths"]["/hello/{name}"] == {
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "get": {
            "summary": "Say hello",
            "responses": {
                "200": {"description": "hello"},
                "404": {
                    "description": "no such session or background",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
        },
    }


@pytest.mark.unit
def test_the_offers_config_is_documented_field_by_field() -> None:
    schemas = OPENAPI["components"]["schemas"]
    config = schemas["OfferRequest"]["properties"]["config"]
    assert config["$ref"] == "#/components/schemas/SessionConfigChange"
    change = schemas["SessionConfigChange"]
    assert change["additionalProperties"] is False and "required" not in change
    assert set(change["properties"]) == set(schemas["SessionConfig"]["properties"])
    assert all("default" not in field for field in change["properties"].values())


def test_the_document_describes_every_route(live: ServerThread) -> None:
    status, _, content_type = live.request("GET", "/openapi.json")
    assert status == 200 and content_type.startswith("application/json")
    document = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = {f"{op.method.upper()} {op.path}" for op in (result.ok() for result in document.get_all_operations())}
    assert {"POST /offer", "PATCH /sessions/{id}", "POST /backgrounds", "GET /config/defaults"} <= operations


def test_the_api_keeps_what_its_document_promises(live: ServerThread) -> None:
    document = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    calls = 0
    for result in document.get_all_operations():
        operation = result.ok()

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case) -> None:  # type: ignore[no-untyped-def]
            nonlocal calls
            response = case.call(base_url=live.url, headers=OPERATOR)
            calls += 1
            if case.operation.path in ("/offer", "/whip") and response.status_code == 503:
                return  # the session limit: documented, and what a stranger's valid offers run into
            case.validate_response(response, checks=CHECKS)

        check()
    assert calls >= 100
