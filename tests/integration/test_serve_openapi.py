"""The serve API's OpenAPI document exercised by schemathesis against the running server.

One real `crisisctl serve` (watching one guarded app, with one open incident) on loopback;
every operation of ``/api/openapi.json`` gets a few generated requests as the operator (bearer
token): no answer may be a 5xx, and every answer must match its declared status codes, content
type and schema. Bounded: a handful of examples per operation (about 20 s in all).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from guard_servers import GuardServer, guard_servers
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from serve_support import OPERATOR_TOKEN, ServeProcess, bearer

from crisisctl.incidents import store
from crisisctl.incidents.db import open_database
from crisisctl.severity import Severity

GUARD_TOKEN = "openapi-guard-control-token"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    with guard_servers({"token": GUARD_TOKEN}) as (guard,):
        yield from _serve(tmp_path_factory, guard)


def _serve(tmp: pytest.TempPathFactory, guard: GuardServer) -> Iterator[ServeProcess]:
    watch = f"""\
interval: 1s
services:
  api:
    guards: ["{guard.url}"]
    token: env:SERVE_TEST_GUARD_TOKEN
incidents: {{triage: false}}
"""
    process = ServeProcess(
        tmp.mktemp("openapi"), watch, env={"SERVE_TEST_GUARD_TOKEN": GUARD_TOKEN}
    )
    process.start()
    db = open_database(process.db_url)
    try:
        store.open_incident(db, title="schemathesis", severity=Severity.P3, service="api")
    finally:
        db.close()
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.slow
def test_the_api_answers_as_its_openapi_document_says(serve: ServeProcess) -> None:
    # (schemathesis' pytest plugin reads a field pytest 9 removed: its strategies are driven
    # by hypothesis directly, one operation after another)
    api = schemathesis.openapi.from_url(f"{serve.url}/api/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 15
    headers = bearer(OPERATOR_TOKEN)
    seen: list[str] = []
    for operation in operations:

        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            case.call_and_validate(base_url=serve.url, headers=headers, checks=CHECKS)

        check()
        seen.append(f"{operation.method.upper()} {operation.path}")
    assert "POST /api/services/{name}/mode" in seen and "GET /api/fleet" in seen
