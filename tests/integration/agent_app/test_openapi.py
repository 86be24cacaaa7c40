"""The committed OpenAPI document matches the app, and schemathesis fuzzing the running
api from that document finds no server error and no response outside the document."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.parameters import ParameterLocation

from agent_app.openapi import OPENAPI_FILE, render
from skyfleet.testing.servers import API_KEY, AppProcess

schema = schemathesis.openapi.from_path(str(OPENAPI_FILE))


def test_committed_openapi_matches_the_app() -> None:
    assert OPENAPI_FILE.read_text() == render(), (
        "stale agent_app/openapi.json: run python -m agent_app.openapi"
    )


def test_served_openapi_is_the_committed_one(api: AppProcess) -> None:
    served = httpx.get(api.url + "/openapi.json").json()
    assert served == schema.raw_schema


@pytest.fixture(scope="module")
def session_id(api: AppProcess) -> str:
    with api.client() as client:
        return client.post("/v1/sessions").json()["id"]


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
    derandomize=True,
)
def test_fuzz_finds_no_server_error(case: schemathesis.Case, api: AppProcess, session_id: str) -> None:
    """Positive and negative cases: no 5xx, nothing outside the document, and every request
    the document refuses is refused (strict types at the boundary)."""
    # What this test overwrites is no longer what was generated, so a negative value there
    # says nothing about the app: the bearer header always, the session id in half the cases.
    overwritten = [ParameterLocation.HEADER]
    path = case.path_parameters or {}
    if "session_id" in path and len(path["session_id"]) % 2:
        path["session_id"] = session_id  # half the cases reach a real session
        overwritten.append(ParameterLocation.PATH)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance]
    checks.append(response_schema_conformance)
    if case.meta is None or not any(case.meta.is_negative_at(where) for where in overwritten):
        checks.append(negative_data_rejection)
    case.call_and_validate(
        base_url=api.url,
        headers={"Authorization": f"Bearer {API_KEY}"},
        checks=checks,
        timeout=10,
    )
