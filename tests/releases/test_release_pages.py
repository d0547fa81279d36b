"""The release pages: who sees them, who moves which label, making a release, the diff.

Operators (view, change) make releases and move dev and staging; release managers also
move production; auditors only look (403 on every POST); reviewers and outsiders get 403
on the list and 404 on an agent's pages; the anonymous are sent to log in. A denied,
refused or stale request changes nothing and says why.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from django.test import Client

from audit.models import AuditEvent
from examples.support.agent import SYSTEM_PROMPT
from releases import configuration, prompts, services
from releases.models import Release, ReleaseLabel, ReleaseLabelMove
from tests.releases.pages import client_for as _client

pytestmark = pytest.mark.django_db

AGENT = "support"
PERSONAS = ("release_manager", "operator", "auditor", "reviewer", "outsider", "anonymous")
V2_TEXT = SYSTEM_PROMPT + "Sign off with the customer's first name when you know it.\n"
# Without a gating dataset an agent's promotions pass, and the move says why
# (tests/evals/test_promotion_gate.py has the gate with one).
GATE = "passed: support has no gating dataset (mark one as gating to gate promotions on an eval)"
STAGING_GATE = "passed: staging takes any release from below"


@pytest.fixture(autouse=True)
def _queues(support_queues: None) -> None:
    """The queues the support agent's configuration names (see support_queues)."""


@pytest.fixture
def staged(operator: Any) -> Release:
    """Release 2 (prompt v2, configuration v2) at dev and staging; production at release 1."""
    services.release_labels(agent_name=AGENT)
    prompts.prompt_version_create(
        agent_name=AGENT, template=V2_TEXT, note="Sign off by name", user=operator
    )
    config = copy.deepcopy(configuration.config_version_first(agent_name=AGENT).config)
    config["thresholds"]["issue_refund"] = 0.5
    configuration.config_version_create(
        agent_name=AGENT, config=config, note="lower", user=operator
    )
    release = services.release_make(
        agent_name=AGENT, prompt_number=2, config_number=2, user=operator, note="v2 both"
    )
    for label in ("dev", "staging"):
        services.release_label_move(agent_name=AGENT, label=label, number=2, user=operator)
    return release


def _labels() -> dict[str, int]:
    return dict(ReleaseLabel.objects.values_list("label", "release__number"))


def _state() -> tuple[Any, ...]:
    return (
        list(
            Release.objects.order_by("number").values_list(
                "number", "prompt_version__number", "config_version__number"
            )
        ),
        sorted(ReleaseLabel.objects.values_list("label", "release__number", "moved_at")),
        ReleaseLabelMove.objects.count(),
        AuditEvent.objects.count(),
    )


def _flash(client: Client, path: str = "/releases/support/") -> str:
    body = client.get(path).content.decode()
    return body.split('<p class="flash flash-', 1)[1].split("</p>", 1)[0]


# --- the permission matrix --------------------------------------------------------------------

VIEWERS = {"release_manager": 200, "operator": 200, "auditor": 200}
GETS = {
    "list": ("/releases/", {**VIEWERS, "reviewer": 403, "outsider": 403}),
    "detail": ("/releases/support/", {**VIEWERS, "reviewer": 404, "outsider": 404}),
    "release": ("/releases/support/2/", {**VIEWERS, "reviewer": 404, "outsider": 404}),
    "diff": ("/releases/support/1/?against=2", {**VIEWERS, "reviewer": 404, "outsider": 404}),
}


@pytest.mark.parametrize("page_name", list(GETS))
@pytest.mark.parametrize("persona", PERSONAS)
def test_who_may_see_each_page(
    people: dict[str, Any], staged: Release, page_name: str, persona: str
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


MOVES = {
    "dev": {"release_manager": 302, "operator": 302},
    "staging": {"release_manager": 302, "operator": 302},
    "production": {"release_manager": 302, "operator": 403},
}
DENIED = {"auditor": 403, "reviewer": 404, "outsider": 404, "anonymous": 302}


@pytest.mark.parametrize("label", list(MOVES))
@pytest.mark.parametrize("persona", PERSONAS)
def test_who_may_move_each_label(
    people: dict[str, Any], staged: Release, label: str, persona: str
) -> None:
    # dev back to 1 (a move), staging back to 1 (a rollback), production to 2 (a promotion)
    number = 2 if label == "production" else 1
    status = {**MOVES[label], **DENIED}[persona]
    before = _state()

    response = _client(people[persona]).post(
        "/releases/support/move", {"label": label, "number": number}
    )

    assert response.status_code == status
    if status == 302 and persona != "anonymous":
        assert response["Location"] == "/releases/support/"
        assert _labels()[label] == number
        assert AuditEvent.objects.filter(verb="release.label_moved").count() == 3 + 2 + 1
    else:
        assert _state() == before


@pytest.mark.parametrize(
    ("persona", "status"),
    [("auditor", 403), ("reviewer", 404), ("outsider", 404), ("anonymous", 302)],
)
def test_only_operators_may_make_a_release(
    people: dict[str, Any], staged: Release, persona: str, status: int
) -> None:
    before = _state()

    response = _client(people[persona]).post(
        "/releases/support/new", {"prompt_number": 1, "config_number": 2, "note": "mix"}
    )

    assert response.status_code == status
    assert _state() == before


def test_an_unknown_agent_or_release_is_404_for_an_operator(operator: Any) -> None:
    client = _client(operator)

    assert client.get("/releases/nobody/").status_code == 404
    assert client.get("/releases/support/9/").status_code == 404
    assert client.get("/releases/support/1/?against=9").status_code == 404
    assert client.post("/releases/nobody/move", {"label": "dev", "number": 1}).status_code == 404
    new = client.post("/releases/nobody/new", {"prompt_number": 1, "config_number": 1})
    assert new.status_code == 404
    assert Release.objects.filter(agent_name="nobody").count() == 0


def test_moving_and_making_are_post_only(operator: Any, staged: Release) -> None:
    client = _client(operator)
    before = _state()

    assert client.get("/releases/support/move?label=dev&number=1").status_code == 405
    assert client.get("/releases/support/new?prompt_number=1&config_number=1").status_code == 405
    assert _state() == before


# --- the release manager's flow ----------------------------------------------------------------


def test_promote_to_production_and_roll_back(
    operator: Any, release_manager: Any, staged: Release
) -> None:
    # The operator sees the promotion to production but may not make it.
    body = _client(operator).get("/releases/support/").content.decode()
    assert "Moving production needs the <code>promote_production_release</code>" in body
    assert "Promote release 2 from staging" not in body

    manager = _client(release_manager)
    body = manager.get("/releases/support/").content.decode()
    assert "Promote release 2 from staging" in body
    assert 'href="/releases/support/2/?against=1">see the diff</a>' in body

    response = manager.post(
        "/releases/support/move", {"label": "production", "number": 2, "expected_current": 1}
    )

    assert (response.status_code, response["Location"]) == (302, "/releases/support/")
    assert _flash(manager) == (
        'success">Promoted release 2 to production. New runs use it; runs in flight keep the '
        f"release they started with. Gate: {GATE}."
    )
    assert services.release_production(agent_name=AGENT) == staged
    body = manager.get("/releases/support/").content.decode()
    assert '<option value="1">release 1 · prompt v1 · config v1</option>' in body

    response = manager.post(
        "/releases/support/move", {"label": "production", "number": 1, "expected_current": 2}
    )

    assert response.status_code == 302
    assert _flash(manager) == (
        'success">Rolled production back to release 1. New runs use it; runs in flight keep '
        "the release they started with."
    )
    assert _labels() == {"dev": 2, "staging": 2, "production": 1}
    assert [
        (e.before["number"], e.after["number"], e.after["label"], e.after["kind"], e.actor_label)
        for e in AuditEvent.objects.filter(verb="release.label_moved").order_by("seq")[3:]
    ] == [
        (1, 2, "dev", "move", "otto"),
        (1, 2, "staging", "promotion", "otto"),
        (1, 2, "production", "promotion", "rhea"),
        (2, 1, "production", "rollback", "rhea"),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"label": "dev"}, "Choose a label and a release number to move it to."),
        ({"label": "dev", "number": "two"}, "Choose a label and a release number to move it to."),
        ({"number": "1"}, "Choose a label and a release number to move it to."),
        ({"label": "qa", "number": "1"}, "There is no label &#x27;qa&#x27;"),
        ({"label": "dev", "number": "9"}, "support has no release 9."),
        ({"label": "staging", "number": "2"}, "staging already points at release 2."),
        (
            {"label": "production", "number": "2"},
            "production can move only to the release staging points at",
        ),
    ],
)
def test_an_impossible_move_says_why_and_saves_nothing(
    operator: Any, release_manager: Any, staged: Release, data: dict[str, str], message: str
) -> None:
    # Production at 2 stays a possible promotion unless staging moved: move staging back.
    if data.get("label") == "production":
        services.release_label_move(agent_name=AGENT, label="staging", number=1, user=operator)
    client = _client(release_manager)
    before = _state()

    response = client.post("/releases/support/move", data)

    assert (response.status_code, response["Location"]) == (302, "/releases/support/")
    flash = _flash(client)
    assert flash.startswith('error">')
    assert message in flash
    assert _state() == before


def test_a_move_confirmed_against_a_stale_release_warns_and_saves_nothing(
    operator: Any, staged: Release
) -> None:
    client = _client(operator)
    before = _state()

    response = client.post(
        "/releases/support/move", {"label": "staging", "number": 1, "expected_current": 1}
    )

    assert (response.status_code, response["Location"]) == (302, "/releases/support/")
    assert _flash(client) == (
        'warning">staging moved to release 2 after you looked (you confirmed against release '
        "1). Check the change against it and confirm again."
    )
    assert _state() == before


# --- making a release ----------------------------------------------------------------------------


def test_making_a_release_and_asking_again_finds_it(operator: Any, staged: Release) -> None:
    client = _client(operator)

    response = client.post(
        "/releases/support/new", {"prompt_number": 1, "config_number": 2, "note": "mix"}
    )
    again = client.post("/releases/support/new", {"prompt_number": 1, "config_number": 2})

    assert (response.status_code, response["Location"]) == (302, "/releases/support/3/")
    assert (again.status_code, again["Location"]) == (302, "/releases/support/3/")
    assert _flash(client, "/releases/support/3/") == (
        'success">Release 3 pins prompt v1 and configuration v2. Point dev at it to try it.'
    )
    release = Release.objects.get(number=3)
    assert (release.prompt_version.number, release.config_version.number, release.note) == (
        1,
        2,
        "mix",
    )
    assert _labels() == {"dev": 2, "staging": 2, "production": 1}
    assert AuditEvent.objects.filter(verb="release.created").count() == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"prompt_number": "9", "config_number": "1"}, "support has no prompt version 9."),
        ({"prompt_number": "1", "config_number": "9"}, "support has no configuration version 9."),
        (
            {"prompt_number": "1"},
            "Give the numbers of an existing prompt and configuration version.",
        ),
        (
            {"prompt_number": "x", "config_number": "1"},
            "Give the numbers of an existing prompt and configuration version.",
        ),
    ],
)
def test_making_a_release_of_a_version_that_does_not_exist_says_why(
    operator: Any, staged: Release, data: dict[str, str], message: str
) -> None:
    client = _client(operator)
    before = _state()

    response = client.post("/releases/support/new", data)

    assert (response.status_code, response["Location"]) == (302, "/releases/support/")
    assert _flash(client) == f'error">{message}'
    assert _state() == before


# --- what the pages show -----------------------------------------------------------------------


def test_the_list_and_detail_show_where_each_label_points(auditor: Any, staged: Release) -> None:
    client = _client(auditor)

    listing = client.get("/releases/").content.decode()
    detail = client.get("/releases/support/").content.decode()

    assert listing.count('href="/releases/support/2/">release 2</a>') == 2  # dev, staging
    assert listing.count('href="/releases/support/1/">release 1</a>') == 1  # production
    assert "v2 both" in detail
    assert "Point dev here" not in detail  # an auditor may not
    assert "Make a release" not in detail
    assert 'action="/releases/support/move"' not in detail  # no promote, roll back or point
    assert 'action="/releases/support/new"' not in detail


def test_the_release_page_diffs_against_production_or_another_release(
    auditor: Any, staged: Release
) -> None:
    client = _client(auditor)

    page = client.get("/releases/support/2/").content.decode()
    against = client.get("/releases/support/1/?against=2").content.decode()
    fragment = client.get("/releases/support/2/?against=2", headers={"HX-Request": "true"})

    assert "Diff: release 1 (production) → release 2" in page
    assert "Prompt: v1 → v2" in page
    assert "Configuration: v1 → v2" in page
    assert '<span class="diff-add">+Sign off with the customer' in page
    assert "Diff: release 2 → release 1" in against
    assert '<span class="diff-del">-Sign off with the customer' in against
    body = fragment.content.decode()
    assert (fragment.status_code, "<html" in body) == (200, False)
    assert "No difference: this is the same release." in body


def test_the_audit_log_links_a_release_event_to_the_release_page(
    auditor: Any, staged: Release
) -> None:
    body = _client(auditor).get("/audit/?verb=release.").content.decode()

    assert 'href="/releases/support/"' in body
