"""No 5xx on any input, and a refusal writes nothing (invariant 10), by property.

Every route of the URLconf is enumerated (a new page, API endpoint or admin screen is
covered without touching this file) and driven by hypothesis with arbitrary text, numbers
and JSON: in its path, its query string, its form fields and its JSON body, as an admin
(who passes every permission check and so reaches the deepest code), a queue viewer and an
anonymous visitor, with and without htmx. For each example:

- the status is below 500 (the test client re-raises a view's exception, so a crash
  fails with its traceback and the example that caused it);
- a 4xx changed nothing: every table's fingerprint (tests/snapshot.py) is as before.

A 2xx or 3xx may write (an admin's valid form is accepted); that is what those answers
mean. The form field names come from the pages themselves (every ``name="..."`` of every
product page), so a new form field is drawn too; API bodies draw the API's keys. The
example counts are modest and derandomized, so the suite stays quick and repeatable.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RegexPattern, RoutePattern
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentdesk.registry import agents
from agentdesk.tokens import api_token_create
from reviews.models import ApprovalRequest
from runs.models import DeadLetter
from tests.reviews.factories import queue_make, request_make, user_make
from tests.snapshot import changed_tables, db_snapshot

pytestmark = pytest.mark.django_db


# --- the routes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    route: str  # for the test id
    pieces: tuple[Any, ...]  # the pattern of each level, root first

    @property
    def is_admin(self) -> bool:
        return self.route.startswith("admin/")

    @property
    def is_api(self) -> bool:
        return self.route.startswith("api/")


def _walk(patterns: list[Any], pieces: tuple[Any, ...] = ()) -> Iterator[Endpoint]:
    for entry in patterns:
        here = (*pieces, entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, here)
        elif isinstance(entry, URLPattern):
            yield Endpoint("".join(str(p) for p in here), here)


ENDPOINTS = list(_walk(get_resolver().url_patterns))
_PLACEHOLDER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")
_SURROGATES = re.compile("[\ud800-\udfff]")


# --- what is drawn ---------------------------------------------------------------------------

# Text a browser can send: anything but lone surrogates (not encodable in a URL or a form).
_sendable = st.characters(exclude_categories=("Cs",))
_TRICKY = [
    "\x00", "a\x00b", "²", "٣", "-1", "0", "1e999", "NaN", "9" * 30, "9" * 5000, "' OR 1=1 --",
    "<script>alert(1)</script>", "../../etc/passwd", "%00", "\r\n", " ", "true", "null", "[]",
    "{}", "[" * 3000 + "]" * 3000,
]  # fmt: skip
_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)  # surrogates too: JSON carries them as \\ud800 escapes
    | st.sampled_from(_TRICKY)
)
_json_values = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
_deep_json = st.integers(min_value=30, max_value=20_000).map(lambda d: "[" * d + "]" * d)


# Hostile values come often: each example is a request, and requests are the cost.
_hostile = st.one_of(
    st.sampled_from(_TRICKY),
    st.text(_sendable, max_size=12).map(lambda s: s + "\x00"),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    _deep_json,
)


def _text(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        _hostile,
        _hostile,
        st.sampled_from(known),
        st.text(_sendable, max_size=30),
        _json_values.map(json.dumps),
    )


def _path_value(converter: Any, known: dict[str, list[str]]) -> st.SearchStrategy[str]:
    kind = type(converter).__name__
    if kind == "IntConverter":
        return st.sampled_from(known["ints"]) | st.integers(0, 2**70).map(str)
    if kind == "UUIDConverter":
        return st.sampled_from(known["uuids"]) | st.uuids().map(str)
    text = st.one_of(
        st.sampled_from(known["words"]), _hostile, st.text(_sendable, min_size=1, max_size=20)
    )
    if kind == "PathConverter":
        return text.filter(bool)
    return text.map(lambda s: s.replace("/", "")).filter(bool)


def _piece(pattern: Any, known: dict[str, list[str]]) -> st.SearchStrategy[str]:
    """One level of the route, filled in: converters drawn, regex routes generated."""
    if isinstance(pattern, RegexPattern):
        return st.from_regex(pattern.regex, fullmatch=True).map(
            lambda s: _SURROGATES.sub("", s).lstrip("^").rstrip("$")
        )
    assert isinstance(pattern, RoutePattern)
    route = str(pattern)
    parts: list[st.SearchStrategy[str]] = []
    position = 0
    for match in _PLACEHOLDER.finditer(route):
        parts.append(st.just(route[position : match.start()]))
        value = _path_value(pattern.converters[match["name"]], known)
        parts.append(value.map(lambda s: urllib.parse.quote(s, safe="")))
        position = match.end()
    parts.append(st.just(route[position:]))
    return st.tuples(*parts).map("".join)


# What views read from request.GET besides their forms' fields (which are drawn too).
QUERY_NAMES = ["q", "page", "state", "queue", "agent", "tool", "risk", "age", "ticket", "against"]
QUERY_NAMES += ["from", "before", "after", "o", "p", "e", "_changelist_filters", "next"]


def _api_body(known: dict[str, list[str]]) -> st.SearchStrategy[bytes]:
    text = _text(known["words"])
    value = _json_values | text | st.dictionaries(st.sampled_from(known["fields"]), text)
    shaped = st.fixed_dictionaries(
        {},
        optional={
            "agent": st.sampled_from(known["agents"]) | _json_values,
            "input": st.dictionaries(
                st.sampled_from(["ticket_id", "customer_email", "subject", "body"]) | st.text(),
                value,
            )
            | _json_values,
            "decision": st.sampled_from(["approve", "edit", "reject", "escalate"]) | _json_values,
            "args_hash": st.sampled_from(known["hashes"]) | _json_values,
            "arguments": st.dictionaries(st.sampled_from(known["args"]), value) | _json_values,
            "feedback": value,
            "reason": value,
        },
    )
    return st.one_of(
        shaped.map(lambda body: json.dumps(body).encode()),
        _json_values.map(lambda body: json.dumps(body).encode()),
        _deep_json.map(str.encode),
        st.binary(max_size=40),
    )


# --- the world the requests land in ----------------------------------------------------------


@dataclass
class World:
    people: dict[str, Any]
    tokens: dict[str, str]
    known: dict[str, list[str]]


_FIELD_NAMES: list[str] = []
_NAME = re.compile(r'\sname="([^"]+)"')


def _form_field_names(admin: Any, known: dict[str, list[str]]) -> list[str]:
    """Every form field name on the product's pages (once per session: names, not data)."""
    if not _FIELD_NAMES:
        client = Client()
        client.force_login(admin)
        names: set[str] = set()
        for endpoint in ENDPOINTS:
            if endpoint.is_admin or endpoint.is_api:
                continue
            path = _PLACEHOLDER.sub(
                lambda m, e=endpoint: _sample(e, m["name"], known),  # type: ignore[misc]
                endpoint.route,
            )
            response = client.get("/" + path)
            if response.status_code == 200 and "html" in response.get("Content-Type", ""):
                names.update(_NAME.findall(response.content.decode()))
        _FIELD_NAMES.extend(sorted(names - {"csrfmiddlewaretoken"}))
    return _FIELD_NAMES


def _sample(endpoint: Endpoint, name: str, known: dict[str, list[str]]) -> str:
    """A real value for a path parameter, to open the page and read its forms."""
    for pattern in endpoint.pieces:
        if isinstance(pattern, RoutePattern) and name in pattern.converters:
            kind = type(pattern.converters[name]).__name__
            return {"IntConverter": known["ints"][0], "UUIDConverter": known["uuids"][0]}.get(
                kind, "support"
            )
    raise KeyError(name)


@pytest.fixture
def world(db: None) -> World:
    admin = get_user_model().objects.create_superuser("root", "root@example.com", None)
    viewer = user_make("vera")
    queue = queue_make("refunds", viewers=(viewer,))
    approval: ApprovalRequest = request_make(queue=queue)
    letter = DeadLetter.objects.create(run=approval.run, seq=2, error={"class": "internal_error"})
    schemas = [
        tool.input_schema.model_json_schema() for agent in agents().values() for tool in agent.tools
    ]
    args = sorted({name for schema in schemas for name in schema.get("properties", {})})
    known: dict[str, list[str]] = {
        "ints": sorted({str(approval.pk), str(queue.pk), str(letter.pk), str(admin.pk), "1"}),
        "uuids": [str(approval.run_id), str(uuid.UUID(int=0))],
        "agents": sorted(agents()),
        "hashes": [approval.args_hash, ""],
        "args": args,
        "words": [
            *sorted(agents()),
            approval.args_hash,
            queue.slug,
            "requeue",
            "discard",
            "approve",
            "decide",
            "view",
            "grant",
            "revoke",
            "vera",
            "group:reviewer",
            "T-0001",
            "SO-1002",
            "29.00",
            "issue_refund",
            "irreversible",
            "code",
            "production",
            "staging",
        ],
    }
    known["fields"] = sorted({*_form_field_names(admin, known), *[f"args-{a}" for a in args]})
    tokens = {
        "admin": api_token_create(user=admin, name="p")[1],
        "viewer": api_token_create(user=viewer, name="p")[1],
    }
    return World({"admin": admin, "viewer": viewer, "anonymous": None}, tokens, known)


# --- the property ----------------------------------------------------------------------------


def _request(
    world: World, endpoint: Endpoint, data: st.DataObject
) -> tuple[str, Callable[[], Any]]:
    """Draw one request; return its address and a call that sends it.

    The client logs in here, before the caller's snapshot: logging in writes the user's
    last_login, which is not the request's doing.
    """
    known = world.known
    path = "/" + data.draw(st.tuples(*(_piece(p, known) for p in endpoint.pieces)).map("".join))
    persona = data.draw(st.sampled_from(["admin", "admin", "admin", "viewer", "anonymous"]))
    method = data.draw(st.sampled_from(["GET", "POST"]))
    query = data.draw(
        st.dictionaries(
            st.one_of(
                st.sampled_from(QUERY_NAMES),
                st.sampled_from(QUERY_NAMES),
                st.sampled_from(known["fields"]),
                st.text(_sendable, min_size=1, max_size=8),
            ),
            _text(known["words"]),
            max_size=6,
        )
    )
    headers = {"HX-Request": "true"} if data.draw(st.booleans()) else {}
    client = Client()
    if endpoint.is_api:
        token = data.draw(
            st.sampled_from([world.tokens["admin"], world.tokens["admin"], world.tokens["viewer"]])
            | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)
        )
        headers["Authorization"] = f"Bearer {token}"
        if data.draw(st.booleans()):
            headers["Idempotency-Key"] = data.draw(
                st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=250)
            )
    elif world.people[persona] is not None:
        client.force_login(world.people[persona])
    target = f"{path}?{urllib.parse.urlencode(query)}" if query else path
    if method == "GET":
        return target, lambda: client.get(target, headers=headers)
    if endpoint.is_api:
        body = data.draw(_api_body(known))
        return target, lambda: client.post(
            target, data=body, content_type="application/json", headers=headers
        )
    form = data.draw(
        st.dictionaries(
            st.sampled_from(known["fields"]) | st.text(_sendable, min_size=1, max_size=8),
            _text(known["words"]) | st.lists(_text(known["words"]), max_size=3),
            max_size=12,
        )
    )
    return target, lambda: client.post(target, data=form, headers=headers)


_settings = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.route for e in ENDPOINTS])
def test_inv10_no_input_gets_a_5xx_and_a_refusal_writes_nothing(
    world: World, endpoint: Endpoint
) -> None:
    # The admin is Django's own, well tested: fewer examples there, more on the product.
    examples = 3 if endpoint.is_admin else 12

    @settings(_settings, max_examples=examples)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        target, send = _request(world, endpoint, data)
        before = db_snapshot()
        response = send()
        status = response.status_code
        assert status < 500, f"{target}: {status}"
        if 400 <= status < 500:
            assert changed_tables(before, db_snapshot()) == [], f"{target}: {status}"

    check()
