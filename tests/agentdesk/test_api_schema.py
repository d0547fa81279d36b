"""The API's OpenAPI 3 schema (/api/schema) and its docs page (/api/docs).

The schema is valid OpenAPI (checked by openapi-spec-validator), names every route of
the URLconf under api/ with exactly the methods that route answers, and describes what
the API sends. Both pages are public and the docs page loads nothing from elsewhere.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import URLResolver, get_resolver
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from agentdesk.tokens import api_token_create
from tests.reviews.factories import queue_make, request_make
from tests.runs.factories import ticket_input

pytestmark = pytest.mark.django_db

# The schema and the docs page themselves, and ninja's root (a 404 naming the docs).
_NOT_OPERATIONS = {"openapi-json", "openapi-view", "api-root"}
_PLACEHOLDER = re.compile(r"<(?:[^>:]+:)?([^>]+)>")


def _api_routes() -> dict[str, str]:
    """Every API operation's route in the URLconf, in OpenAPI's form -> one real address."""
    found: dict[str, str] = {}

    def walk(patterns: list[Any], prefix: str) -> None:
        for entry in patterns:
            route = prefix + str(entry.pattern)
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, route)
            elif route.startswith("api/") and entry.name not in _NOT_OPERATIONS:
                sample = route.replace("<int:request_id>", "1")
                sample = _PLACEHOLDER.sub(str(uuid.UUID(int=0)), sample)
                found["/" + _PLACEHOLDER.sub(r"{\1}", route)] = "/" + sample

    walk(get_resolver().url_patterns, "")
    return found


def _schema(client: Client) -> dict[str, Any]:
    response = client.get("/api/schema")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    return response.json()


def test_the_schema_is_valid_openapi_3_and_public(client: Client) -> None:
    schema = _schema(client)  # no session, no token

    validate(schema)  # raises on any violation of the OpenAPI 3.1 specification
    assert schema["openapi"] == "3.1.0"
    assert schema["components"]["securitySchemes"] == {
        "BearerToken": {"type": "http", "scheme": "bearer"}
    }


def test_every_api_route_is_in_the_schema_with_exactly_its_methods(client: Client) -> None:
    routes = _api_routes()
    paths = _schema(client)["paths"]

    assert (
        sorted(paths)
        == sorted(routes)
        == [
            "/api/requests",
            "/api/requests/{request_id}",
            "/api/requests/{request_id}/decision",
            "/api/runs",
            "/api/runs/{run_id}",
        ]
    )
    for path, address in routes.items():
        # Without a token: a method the route has is a 401, any other a 405.
        answered = {
            method
            for method in ("get", "post", "put", "patch", "delete")
            if getattr(client, method)(address).status_code == 401
        }
        assert answered == set(paths[path]), path
        for operation in paths[path].values():
            assert operation["security"] == [{"BearerToken": []}]
            assert "401" in operation["responses"]


def _conforms(schema: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    """Validate a body against its response's schema, its $refs resolved in the document."""
    content = schema["paths"][path][method]["responses"][str(status)]["content"]
    one = {**content["application/json"]["schema"], "components": schema["components"]}
    OAS31Validator(one).validate(body)


def test_what_the_api_sends_matches_the_schema(client: Client, operator: Any) -> None:
    schema = _schema(client)
    auth = {"Authorization": f"Bearer {api_token_create(user=operator, name='t')[1]}"}
    approval = request_make(queue=queue_make("refunds", deciders=(operator,)))

    submitted = client.post(
        "/api/runs",
        json.dumps({"agent": "support", "input": ticket_input()}),
        content_type="application/json",
        headers=auth,
    )
    run = client.get(f"/api/runs/{submitted.json()['id']}", headers=auth)
    listed = client.get("/api/requests", headers=auth)
    one = client.get(f"/api/requests/{approval.pk}", headers=auth)
    decided = client.post(
        f"/api/requests/{approval.pk}/decision",
        json.dumps({"decision": "reject", "feedback": "not this one"}),
        content_type="application/json",
        headers=auth,
    )
    again = client.post(
        f"/api/requests/{approval.pk}/decision",
        json.dumps({"decision": "reject", "feedback": "twice"}),
        content_type="application/json",
        headers=auth,
    )
    missing = client.get(f"/api/runs/{uuid.UUID(int=0)}", headers=auth)

    answers = [
        ("/api/runs", "post", submitted),
        ("/api/runs/{run_id}", "get", run),
        ("/api/requests", "get", listed),
        ("/api/requests/{request_id}", "get", one),
        ("/api/requests/{request_id}/decision", "post", decided),
        ("/api/requests/{request_id}/decision", "post", again),
        ("/api/runs/{run_id}", "get", missing),
    ]
    assert [response.status_code for _, _, response in answers] == [
        201, 200, 200, 200, 200, 409, 404
    ]  # fmt: skip
    assert [r["id"] for r in listed.json()["requests"]] == [approval.pk]
    assert decided.json()["request"]["outcome"] == "rejected"
    for path, method, response in answers:
        assert response["Content-Type"] == "application/json"  # as before, errors too
        _conforms(schema, path, method, response.status_code, response.json())


def test_the_docs_page_is_public_and_loads_only_our_own_files(client: Client) -> None:
    response = client.get("/api/docs")

    assert response.status_code == 200
    page = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sorted(assets) == [
        "/static/ninja/favicon.png",
        "/static/ninja/favicon.svg",
        "/static/ninja/swagger-ui-bundle.js",
        "/static/ninja/swagger-ui-init.js",
        "/static/ninja/swagger-ui.css",
    ]
    for asset in assets:  # shipped in the installed package, served by our static files
        assert finders.find(asset.removeprefix("/static/")) is not None, asset
    settings_json = re.search(r'id="swagger-settings">(.*?)</script>', page, re.S)
    assert settings_json is not None
    # The schema from this server, and no badge fetched from Swagger's online validator.
    assert json.loads(settings_json[1]) == {
        "layout": "BaseLayout",
        "deepLinking": True,
        "validatorUrl": None,
        "url": "/api/schema",
    }
