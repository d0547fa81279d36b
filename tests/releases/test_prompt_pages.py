"""The prompt pages: who sees and changes what, the form, the diff, "Try in dev".

Operators (view, change) create versions and try one in dev; release managers too;
auditors only look (403 on the form and every POST); reviewers and outsiders get 403 on
the list and 404 on an agent's pages; the anonymous are sent to log in. Labels are shown
read-only here: they are moved on the release pages (tests/releases/test_release_pages.py).
A denied or refused request changes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from django.test import Client

from agents.registry import agent_get
from audit.models import AuditEvent
from examples.support.agent import SYSTEM_PROMPT
from releases import prompts, services
from releases.models import PromptVersion, Release, ReleaseLabel, ReleaseLabelMove
from tests.releases.pages import client_for as _client

pytestmark = pytest.mark.django_db

AGENT = "support"
PERSONAS = ("release_manager", "operator", "auditor", "reviewer", "outsider", "anonymous")
V2_TEXT = SYSTEM_PROMPT + "Sign off with the customer's first name when you know it.\n"


@pytest.fixture(autouse=True)
def _queues(support_queues: None) -> None:
    """The queues the support agent's configuration names (see support_queues)."""


@pytest.fixture
def staged(operator: Any) -> PromptVersion:
    """Prompt version 2 in release 2, at dev and staging; production still at release 1."""
    services.release_labels(agent_name=AGENT)
    v2 = prompts.prompt_version_create(
        agent_name=AGENT, template=V2_TEXT, note="Sign off by name", user=operator
    )
    services.release_try_prompt(agent_name=AGENT, prompt_number=2, user=operator)
    services.release_label_move(agent_name=AGENT, label="staging", number=2, user=operator)
    return v2


def _state() -> tuple[Any, ...]:
    return (
        list(PromptVersion.objects.order_by("number").values_list("number", "content_hash")),
        list(Release.objects.order_by("number").values_list("number", "prompt_version__number")),
        _labels(),
        ReleaseLabelMove.objects.count(),
        AuditEvent.objects.count(),
    )


def _labels() -> dict[str, int]:
    return dict(ReleaseLabel.objects.values_list("label", "release__number"))


def _flash(client: Client, path: str) -> str:
    body = client.get(path).content.decode()
    return body.split('<p class="flash flash-', 1)[1].split("</p>", 1)[0]


# --- the permission matrix --------------------------------------------------------------------

VIEWERS = {"release_manager": 200, "operator": 200, "auditor": 200}
GETS = {
    "list": ("/prompts/", {**VIEWERS, "reviewer": 403, "outsider": 403}),
    "detail": ("/prompts/support/", {**VIEWERS, "reviewer": 404, "outsider": 404}),
    "version": ("/prompts/support/versions/2/", {**VIEWERS, "reviewer": 404, "outsider": 404}),
    "new": (
        "/prompts/support/new",
        {"release_manager": 200, "operator": 200, "auditor": 403, "reviewer": 404, "outsider": 404},
    ),
}


@pytest.mark.parametrize("page_name", list(GETS))
@pytest.mark.parametrize("persona", PERSONAS)
def test_who_may_see_each_page(
    people: dict[str, Any], staged: Any, page_name: str, persona: str
) -> None:
    path, expected = GETS[page_name]
    before = _state()

    response = _client(people[persona]).get(path)

    if persona == "anonymous":
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")
    else:
        assert response.status_code == expected[persona]
    assert _state() == before


TRY = {
    "release_manager": 302,
    "operator": 302,
    "auditor": 403,
    "reviewer": 404,
    "outsider": 404,
    "anonymous": 302,
}


@pytest.mark.parametrize("persona", PERSONAS)
def test_who_may_try_a_version_in_dev(people: dict[str, Any], staged: Any, persona: str) -> None:
    before = _state()

    response = _client(people[persona]).post("/prompts/support/try", {"number": 1})

    assert response.status_code == TRY[persona]
    if persona in ("release_manager", "operator"):
        assert response["Location"] == "/releases/support/"
        # Prompt v1 with dev's configuration (v1) is release 1: dev points back at it.
        assert _labels() == {"dev": 1, "staging": 2, "production": 1}
        assert ReleaseLabelMove.objects.count() == before[3] + 1
    else:
        assert _state() == before


@pytest.mark.parametrize(
    ("persona", "status"),
    [("auditor", 403), ("reviewer", 404), ("outsider", 404), ("anonymous", 302)],
)
def test_only_operators_may_create_a_version(
    people: dict[str, Any], staged: Any, persona: str, status: int
) -> None:
    before = _state()

    response = _client(people[persona]).post(
        "/prompts/support/new", {"template": V2_TEXT + "More.\n", "note": "more"}
    )

    assert response.status_code == status
    assert _state() == before


def test_an_unknown_agent_or_version_is_404_for_an_operator(operator: Any) -> None:
    client = _client(operator)
    assert client.get("/prompts/nobody/").status_code == 404
    assert client.get("/prompts/support/versions/9/").status_code == 404
    assert client.get("/prompts/support/new?from=9").status_code == 404
    assert client.post("/prompts/nobody/try", {"number": 1}).status_code == 404
    assert PromptVersion.objects.filter(agent_name="nobody").count() == 0
    assert Release.objects.filter(agent_name="nobody").count() == 0


def test_trying_is_post_only_and_labels_have_no_move_here(operator: Any, staged: Any) -> None:
    client = _client(operator)
    before = _state()

    assert client.get("/prompts/support/try?number=1").status_code == 405
    assert client.post("/prompts/support/move", {"label": "dev", "number": 1}).status_code == 404
    assert _state() == before


# --- the operator's flow ---------------------------------------------------------------------


def test_create_a_version_and_try_it_in_dev(operator: Any) -> None:
    client = _client(operator)
    page = client.get("/prompts/support/new").content.decode()
    assert "Placeholders this agent fills in: <code>$shop_name</code>, <code>$today</code>" in page
    assert "You are the customer-support agent of $shop_name" in page  # starts from dev's

    response = client.post(
        "/prompts/support/new",
        {"template": V2_TEXT.replace("\n", "\r\n"), "note": "Sign off by name"},
    )

    assert (response.status_code, response["Location"]) == (302, "/prompts/support/versions/2/")
    v2 = PromptVersion.objects.get(agent_name=AGENT, number=2)
    assert (v2.template, v2.note, v2.created_by) == (V2_TEXT, "Sign off by name", operator)
    page = client.get(response["Location"]).content.decode()
    assert "Saved version 2. No label points at it yet" in page
    assert "Diff: version 1 (production's) → version 2" in page
    assert '<span class="diff-add">+Sign off with the customer&#x27;s first name' in page
    assert 'action="/prompts/support/try"' in page
    assert _labels() == {"dev": 1, "staging": 1, "production": 1}

    response = client.post("/prompts/support/try", {"number": 2})

    assert (response.status_code, response["Location"]) == (302, "/releases/support/")
    assert _flash(client, "/releases/support/") == (
        'success">dev now runs release 2: prompt v2 with configuration v1.'
    )
    assert _labels() == {"dev": 2, "staging": 1, "production": 1}
    release = Release.objects.get(number=2)
    assert (release.prompt_version, release.config_version.number) == (v2, 1)
    assert [
        (e.before["number"], e.after["number"], e.after["label"], e.after["kind"], e.actor_label)
        for e in AuditEvent.objects.filter(verb="release.label_moved").order_by("seq")[3:]
    ] == [(1, 2, "dev", "move", "otto")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"number": "9"}, "support has no prompt version 9."),
        ({"number": "two"}, "Choose a prompt version to try in dev."),
        ({}, "Choose a prompt version to try in dev."),
        ({"number": "2"}, "dev already uses prompt version 2."),
    ],
)
def test_an_impossible_try_says_why_and_saves_nothing(
    operator: Any, staged: Any, data: dict[str, str], message: str
) -> None:
    client = _client(operator)
    before = _state()

    response = client.post("/prompts/support/try", data)

    assert (response.status_code, response["Location"]) == (302, "/prompts/support/")
    assert _flash(client, "/prompts/support/") == f'error">{message}'
    assert _state() == before


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("", "The prompt is empty."),
        (SYSTEM_PROMPT + "Hello $customer_name.\n", "does not provide $customer_name"),
        ("Refunds up to $50.\n", "Line 1: &#x27;$50.&#x27; is not a placeholder"),
        (SYSTEM_PROMPT, "Version 1 has exactly this text already"),
    ],
)
def test_an_invalid_template_re_renders_with_the_reason_and_saves_nothing(
    operator: Any, staged: Any, template: str, message: str
) -> None:
    before = _state()

    response = _client(operator).post("/prompts/support/new", {"template": template, "note": "bad"})

    assert response.status_code == 400
    body = response.content.decode()
    assert message in body
    assert "Save as a new version" in body
    assert _state() == before


# --- labels, read-only -----------------------------------------------------------------------


def test_the_detail_page_shows_where_each_label_points_and_offers_try_not_moves(
    operator: Any, auditor: Any, staged: Any
) -> None:
    body = _client(operator).get("/prompts/support/").content.decode()

    assert 'href="/releases/support/"' in body  # promote and roll back there
    assert body.count('href="/releases/support/2/">release 2</a>: prompt') == 2  # dev, staging
    assert body.count('href="/releases/support/1/">release 1</a>: prompt') == 1  # production
    assert 'action="/prompts/support/move"' not in body
    assert body.count("Try in dev") == 2  # on v1's row and in the page's text; not on dev's v2
    assert "Promote release" not in body
    assert "Try in dev</button>" not in _client(auditor).get("/prompts/support/").content.decode()


def test_the_diff_comes_as_a_fragment_for_htmx(auditor: Any, staged: Any) -> None:
    client = _client(auditor)

    fragment = client.get("/prompts/support/versions/2/", headers={"HX-Request": "true"})
    page = client.get("/prompts/support/versions/2/")

    assert fragment.status_code == page.status_code == 200
    body = fragment.content.decode()
    assert "<html" not in body
    assert "Diff: version 1 (production's) → version 2" in body
    assert "+Sign off with the customer" in body
    assert "Try in dev" not in page.content.decode()  # an auditor cannot


def test_the_diff_against_another_version(auditor: Any, staged: Any) -> None:
    body = _client(auditor).get("/prompts/support/versions/1/?against=2").content.decode()

    assert "Diff: version 2 → version 1" in body
    assert '<span class="diff-del">-Sign off with the customer' in body
    assert _client(auditor).get("/prompts/support/versions/1/?against=9").status_code == 404


def test_a_deploy_that_changed_the_code_prompt_is_pointed_out(
    operator: Any, staged: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = agent_get(AGENT)
    changed = dataclasses.replace(agent, system_prompt=SYSTEM_PROMPT + "New rule.\n")
    monkeypatch.setattr("releases.views.agent_get", lambda name: changed)
    client = _client(operator)

    body = client.get("/prompts/support/").content.decode()
    form = client.get("/prompts/support/new?from=code").content.decode()

    assert "The code declares a system prompt that is not stored as a version" in body
    assert 'href="/prompts/support/new?from=code"' in body
    assert "New rule." in form


def test_the_list_shows_the_prompt_of_each_label_s_release(auditor: Any, staged: Any) -> None:
    body = _client(auditor).get("/prompts/").content.decode()

    assert body.count('href="/prompts/support/versions/2/">v2</a>') == 2  # dev, staging
    assert body.count('href="/prompts/support/versions/1/">v1</a>') == 1  # production


@pytest.mark.parametrize(
    ("persona", "shown"),
    [("operator", True), ("auditor", True), ("reviewer", False), ("outsider", False)],
)
def test_the_nav_link_is_shown_to_who_may_see(
    people: dict[str, Any], persona: str, shown: bool
) -> None:
    body = _client(people[persona]).get("/runs/").content.decode()

    assert ('href="/prompts/"' in body) is shown


def test_the_agent_page_links_to_its_prompts(operator: Any) -> None:
    body = _client(operator).get("/agents/support/").content.decode()

    assert 'href="/prompts/support/">Prompt versions</a>' in body


def test_the_audit_log_links_a_prompt_event_to_the_prompt_page(auditor: Any, staged: Any) -> None:
    body = _client(auditor).get("/audit/?verb=prompt.").content.decode()

    assert 'href="/prompts/support/"' in body
