"""The API against its own OpenAPI document: Schemathesis generates requests from /openapi.json and
checks every answer (no 5xx, documented statuses and content types, bodies that match their schemas)."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import OPERATOR, ServerThread

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# SDP offers and trickle-ICE fragments are text: generate them as Schemathesis generates text/plain.
schemathesis.serializer.alias(["application/sdp", "application/trickle-ice-sdpfrag"], "text/plain")


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
