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
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RegexPattern, RoutePattern
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentdesk.tokens import api_token_create
from agents.registry import agents
from evals import datasets
from releases import services
from reviews.models import ApprovalRequest
from runs.models import DeadLetter
from tests.processes import ROOT
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
    st.sampled_from(_TRICKY),
    # Digits int() refuses though str.isdigit() says yes: superscripts, other scripts' forms.
    st.text(st.characters(categories=("Nd", "No")), min_size=1, max_size=3),
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


def _path_value(name: str, converter: Any, known: Known) -> st.SearchStrategy[str]:
    """Mostly a value that reaches the view (a real id, a registered agent), else anything.

    A path that matches nothing is a 404 before any view runs; the view's own reading of
    its query, form and body is where the bugs are, so four examples in five get there.
    """
    kind = type(converter).__name__
    valid = st.sampled_from(known.by_name.get(name) or known.by_converter[kind])
    if kind == "IntConverter":
        other = st.integers(0, 2**70).map(str)
    elif kind == "UUIDConverter":
        other = st.uuids().map(str)
    else:
        text = _hostile | st.text(_sendable, min_size=1, max_size=20)
        other = text.map(lambda s: s if kind == "PathConverter" else s.replace("/", ""))
    return st.integers(0, 4).flatmap(lambda i: valid if i else other.filter(bool))


def _piece(pattern: Any, known: Known) -> st.SearchStrategy[str]:
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
        value = _path_value(match["name"], pattern.converters[match["name"]], known)
        parts.append(value.map(lambda s: urllib.parse.quote(s, safe="")))
        position = match.end()
    parts.append(st.just(route[position:]))
    return st.tuples(*parts).map("".join)


def _query_names_in_code() -> list[str]:
    """What views read from request.GET outside their forms: ``GET.get("against")``."""
    found: set[str] = set()
    for app in ("agentdesk", "runs", "reviews", "examples"):
        for source in (ROOT / app).rglob("*.py"):
            found.update(re.findall(r"GET\.get\(\s*[\"']([^\"']+)", source.read_text()))
    return sorted(found)


# Those, and the admin's own (search, ordering, page, error, filters kept across pages).
QUERY_NAMES = [*_query_names_in_code(), "q", "o", "p", "e", "_changelist_filters"]


def _api_body(known: Known) -> st.SearchStrategy[bytes]:
    text = _text(known.words)
    value = _json_values | text | st.dictionaries(st.sampled_from(known.fields), text)
    shaped = st.fixed_dictionaries(
        {},
        optional={
            "agent": st.sampled_from(known.agents) | _json_values,
            "input": st.dictionaries(
                st.sampled_from(["ticket_id", "customer_email", "subject", "body"]) | st.text(),
                value,
            )
            | _json_values,
            "decision": st.sampled_from(["approve", "edit", "reject", "escalate"]) | _json_values,
            "args_hash": st.sampled_from(known.hashes) | _json_values,
            "arguments": st.dictionaries(st.sampled_from(known.args), value) | _json_values,
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
class Known:
    """Real values of the world, so that drawn requests get past lookups to the code."""

    by_name: dict[str, list[str]]  # path parameter name -> real values
    by_converter: dict[str, list[str]]
    agents: list[str]
    hashes: list[str]
    args: list[str]  # every tool's argument names
    words: list[str]
    fields: list[str] = field(default_factory=list)  # every page's field and query names
    page_names: dict[str, list[str]] = field(default_factory=dict)  # route -> its names


@dataclass
class World:
    people: dict[str, Any]
    tokens: dict[str, str]
    known: Known


# Names read from the pages once per session: they depend on the code, not on the data.
_PAGE_NAMES: dict[str, list[str]] = {}
_NAMES = re.compile(
    r'<(?:input|select|textarea|button)\b[^>]*\sname="([^"]+)"|[?&;]([A-Za-z_][\w-]*)='
)


def _read_page_names(admin: Any, known: Known) -> dict[str, list[str]]:
    """Per route, the names its page uses: form fields, and query keys of its links."""
    if not _PAGE_NAMES:
        client = Client()
        client.force_login(admin)
        for endpoint in ENDPOINTS:
            if endpoint.is_admin or endpoint.is_api:
                continue
            path = _PLACEHOLDER.sub(
                lambda m, e=endpoint: _real_value(e, m["name"], known),  # type: ignore[misc]
                endpoint.route,
            )
            response = client.get("/" + path)
            names: set[str] = set()
            if response.status_code == 200 and "html" in response.get("Content-Type", ""):
                for field_name, query_key in _NAMES.findall(response.content.decode()):
                    names.add(field_name or query_key)
            _PAGE_NAMES[endpoint.route] = sorted(names - {"csrfmiddlewaretoken"})
    return _PAGE_NAMES


def _real_value(endpoint: Endpoint, name: str, known: Known) -> str:
    for pattern in endpoint.pieces:
        if isinstance(pattern, RoutePattern) and name in pattern.converters:
            kind = type(pattern.converters[name]).__name__
            return (known.by_name.get(name) or known.by_converter[kind])[0]
    raise KeyError(name)


@pytest.fixture
def world(db: None) -> World:
    admin = get_user_model().objects.create_superuser("root", "root@example.com", None)
    viewer = user_make("vera")
    queue = queue_make("refunds", viewers=(viewer,))
    approval: ApprovalRequest = request_make(queue=queue)
    letter = DeadLetter.objects.create(run=approval.run, seq=2, error={"class": "internal_error"})
    for name in agents():  # release 1 (both versions 1) under every label, as first use makes
        services.release_labels(agent_name=name)
    schemas = [
        tool.input_schema.model_json_schema() for agent in agents().values() for tool in agent.tools
    ]
    args = sorted({name for schema in schemas for name in schema.get("properties", {})})
    group = viewer.groups.first()
    dataset = datasets.dataset_create(
        agent_name="support", name="gating", user=None, examples=[]
    ).dataset
    known = Known(
        by_name={
            "request_id": [str(approval.pk)],
            "queue_id": [str(queue.pk)],
            "letter_id": [str(letter.pk)],
            "number": ["1"],
            "run_id": [str(approval.run_id)],
            "agent_name": sorted(agents()),
            "action": ["requeue", "discard"],
            "object_pk": [str(queue.pk)],
            "object_id": [str(queue.pk), str(admin.pk)],
            "user_id": [str(viewer.pk), str(admin.pk)],
            "group_id": [str(group.pk if group else 1)],
            "id": [str(admin.pk)],
            "name": [dataset.name],
        },
        by_converter={
            "IntConverter": ["1"],
            "UUIDConverter": [str(approval.run_id), str(uuid.UUID(int=0))],
            "StringConverter": ["support"],
            "PathConverter": ["1"],
            "SlugConverter": [dataset.name],
        },
        agents=sorted(agents()),
        hashes=[approval.args_hash, ""],
        args=args,
        words=[
            *sorted(agents()),
            *(str(n) for n in (approval.pk, queue.pk, letter.pk, admin.pk, 1, 2)),
            approval.args_hash,
            queue.slug,
            *("requeue", "discard", "approve", "decide", "view", "grant", "revoke", "vera"),
            *("group:reviewer", "T-0001", "SO-1002", "29.00", "issue_refund", "irreversible"),
            *("code", "production", "staging", "dev", "gating", "gating@1"),
        ],
    )
    known.page_names = _read_page_names(admin, known)
    names = {name for page in known.page_names.values() for name in page}
    known.fields = sorted(names | {f"args-{a}" for a in args} | set(QUERY_NAMES))
    tokens = {
        "admin": api_token_create(user=admin, name="p")[1],
        "viewer": api_token_create(user=viewer, name="p")[1],
    }
    return World({"admin": admin, "viewer": viewer, "anonymous": None}, tokens, known)


# --- the property ----------------------------------------------------------------------------


def _attack(
    names: st.SearchStrategy[str], own: list[str], known: Known, *, lists: bool = False
) -> st.SearchStrategy[dict[str, Any]]:
    """A query or form: one of the page's own names gets a hostile value, others anything.

    One parameter attacked per example, so that every name of the page is tried with a
    bad value within a modest number of examples, the others filled so the request gets
    as far as it can.
    """
    value: st.SearchStrategy[Any] = _text(known.words)
    if lists:
        value = value | st.lists(_text(known.words), max_size=3)
    others = st.dictionaries(names, value, max_size=8)
    focus = st.tuples(st.sampled_from(own), _hostile)
    return st.tuples(others, focus).map(lambda pair: {**pair[0], pair[1][0]: pair[1][1]})


def _request(
    world: World, endpoint: Endpoint, data: st.DataObject
) -> tuple[str, Callable[[], Any]]:
    """Draw one request; return its address and a call that sends it.

    The client logs in here, before the caller's snapshot: logging in writes the user's
    last_login, which is not the request's doing.
    """
    known = world.known
    path = "/" + data.draw(st.tuples(*(_piece(p, known) for p in endpoint.pieces)).map("".join))
    persona = data.draw(st.sampled_from(["admin"] * 4 + ["viewer", "anonymous"]))
    method = data.draw(st.sampled_from(["GET", "POST"]))
    own = sorted({*known.page_names.get(endpoint.route, []), *QUERY_NAMES})
    names = st.one_of(
        st.sampled_from(own),
        st.sampled_from(own),
        st.sampled_from(known.fields),
        st.text(_sendable, min_size=1, max_size=8),
    )
    query = data.draw(_attack(names, own, known))
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
    form = data.draw(_attack(names, own, known, lists=True))
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
