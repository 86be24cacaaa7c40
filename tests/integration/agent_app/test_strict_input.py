"""The committed OpenAPI document is the truth at the boundary: for each field of each request
body, a value the document refuses is refused by the running api (422 naming the field), and
a value it accepts is accepted. Values are judged by a JSON Schema validator over the committed
document, not by the app's own models."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from agent_app.openapi import OPENAPI_FILE
from skyfleet.testing.servers import AppProcess

DOC = json.loads(OPENAPI_FILE.read_text())
WRONG_TYPES: list[Any] = [False, True, None, 0, 1, 2.5, "", "1", "x", [], ["x"], {}, {"a": "b"}]
NUMBERS: list[Any] = [-1, -0.5, 0, 0.25, 600, 600.5, 1e300]
STRINGS: list[Any] = ["", "x", "x" * 4000, "x" * 4001]
LABELS: list[Any] = [
    {"a": 1},
    {"a": None},
    {"a": False},
    {"a": ["b"]},
    {"": "v"},
    {"k" * 64: "v"},
    {"k" * 65: "v"},
    {"a": "v" * 512},
    {"a": "v" * 513},
    {f"k{i}": "v" for i in range(16)},
    {f"k{i}": "v" for i in range(17)},
]
# (route, base body, field, candidate values)
CASES: list[tuple[str, dict[str, Any], str, list[Any]]] = [
    ("/v1/sessions/{session_id}/tasks", {"input": "x"}, "work_seconds", WRONG_TYPES + NUMBERS),
    ("/v1/sessions/{session_id}/tasks", {"work_seconds": 0}, "input", WRONG_TYPES + STRINGS),
    ("/v1/sessions/{session_id}/messages", {}, "content", WRONG_TYPES + STRINGS),
    ("/v1/sessions", {}, "metadata", WRONG_TYPES + LABELS),
]
# The turn fast path takes application/json; any other JSON media type goes through FastAPI.
MEDIA_TYPES = ["application/json", "application/vnd.skyfleet+json"]


def body_validator(route: str) -> Draft202012Validator:
    content = DOC["paths"][route]["post"]["requestBody"]["content"]["application/json"]["schema"]
    # The document's "#/components/..." references resolve against this schema's root.
    return Draft202012Validator({**content, "components": DOC["components"]})


def post(client: httpx.Client, route: str, session_id: str, body: Any, media_type: str) -> httpx.Response:
    url = route.replace("{session_id}", session_id)
    return client.post(url, content=json.dumps(body).encode(), headers={"content-type": media_type})


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
@pytest.mark.parametrize(("route", "base", "field", "values"), CASES, ids=[f"{c[0]}:{c[2]}" for c in CASES])
def test_the_document_decides_what_is_accepted(
    api: AppProcess, route: str, base: dict[str, Any], field: str, values: list[Any], media_type: str
) -> None:
    validator = body_validator(route)
    wrong: list[str] = []
    with api.client() as client:
        for value in values:
            body = {**base, field: value}
            valid = validator.is_valid(body)
            session_id = client.post("/v1/sessions").json()["id"]  # a fresh one: turns count
            response = post(client, route, session_id, body, media_type)
            if valid and response.status_code >= 300:
                wrong.append(f"{field}={value!r:.60}: valid by the document, got {response.status_code}")
            elif not valid:
                answer = response.json()
                locations = [d["loc"] for d in answer.get("details", [])]
                if response.status_code != 422 or answer["code"] != "invalid_request":
                    wrong.append(
                        f"{field}={value!r:.60}: refused by the document, got {response.status_code}"
                    )
                elif not any(loc[:2] == ["body", field] for loc in locations):
                    wrong.append(f"{field}={value!r:.60}: 422 does not name the field: {locations}")
                elif f"body.{field}" not in answer["message"]:
                    wrong.append(
                        f"{field}={value!r:.60}: message does not name the field: {answer['message']}"
                    )
    assert wrong == []


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_an_extra_property_is_refused_by_name(api: AppProcess, media_type: str) -> None:
    smallest = {
        "/v1/sessions/{session_id}/tasks": {"input": "x"},
        "/v1/sessions/{session_id}/messages": {"content": "x"},
        "/v1/sessions": {},
    }
    with api.client() as client:
        session_id = client.post("/v1/sessions").json()["id"]
        for route, body in smallest.items():
            assert body_validator(route).is_valid(body)
            extra = {**body, "surprise": 1}
            assert not body_validator(route).is_valid(extra)
            response = post(client, route, session_id, extra, media_type)
            assert response.status_code == 422, (route, response.text)
            assert ["body", "surprise"] in [d["loc"] for d in response.json()["details"]]


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_text_utf8_cannot_carry_is_refused_and_nothing_is_stored(api: AppProcess, media_type: str) -> None:
    """A JSON escape of a lone surrogate parses, but no UTF-8 store or reply can carry it: 422
    naming the field, never a 500 after a half-applied write."""
    with api.client() as client:
        before = client.post("/v1/sessions").json()["id"]
        for route, body in [
            ("/v1/sessions", b'{"metadata": {"a": "\\udc00"}}'),
            ("/v1/sessions", b'{"metadata": {"\\udc00": "a"}}'),
            (f"/v1/sessions/{before}/messages", b'{"content": "a\\ud800"}'),
            (f"/v1/sessions/{before}/tasks", b'{"input": "a\\ud800"}'),
        ]:
            response = client.post(route, content=body, headers={"content-type": media_type})
            assert response.status_code == 422, (route, body, response.text)
            assert response.json()["details"][0]["loc"][:2] in (
                ["body", "metadata"],
                ["body", "content"],
                ["body", "input"],
            )
        assert client.get(f"/v1/sessions/{before}").json()["turns"] == 0
