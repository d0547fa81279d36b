"""The operators' configuration pages: who sees and changes what, forms, diff, activation.

Operators (view and change) create and activate versions; auditors (view) only look and
get 403 on the form and every POST; reviewers and outsiders get 403 on the list and 404
on an agent's pages; the anonymous are sent to log in. A denied request changes nothing.
"""

from __future__ import annotations

import copy
import html
import re
from typing import Any

import pytest

from agents.registry import agent_get
from audit.models import AuditEvent
from examples.support.review import SUPPORT_POLICY
from releases import configuration, services
from releases.models import AgentConfigVersion, ReleaseLabel
from reviews.models import Queue
from tests.releases.pages import client_for as _client

pytestmark = pytest.mark.django_db

AGENT = "support"


@pytest.fixture(autouse=True)
def _queues(support_queues: None) -> None:
    """Every queue the versions here name exists (see support_queues)."""
    for slug in ("support-leads",):
        Queue.objects.create(slug=slug, name=slug)


PERSONAS = ("operator", "auditor", "reviewer", "outsider", "anonymous")


@pytest.fixture
def versions(operator: Any) -> tuple[AgentConfigVersion, AgentConfigVersion]:
    """Version 1 (from code, active) and version 2 (a lower refund threshold, inactive)."""
    v1 = services.config_active(agent_name=AGENT)
    config = copy.deepcopy(v1.config)
    config["thresholds"]["issue_refund"] = 0.5
    v2 = configuration.config_version_create(
        agent_name=AGENT, config=config, note="Lower the refund threshold", user=operator
    )
    return v1, v2


def _state() -> tuple[list[tuple[int, str]], int | None, int]:
    production = ReleaseLabel.objects.filter(agent_name=AGENT, label="production").first()
    return (
        list(AgentConfigVersion.objects.order_by("number").values_list("number", "policy_version")),
        production.release.config_version.number if production else None,
        AuditEvent.objects.count(),
    )


def _form_data(config: dict[str, Any], note: str = "A change") -> dict[str, Any]:
    """What the browser posts for ``config`` from the new-version form."""
    tools = [tool.name for tool in agent_get(AGENT).tools]
    data: dict[str, Any] = {
        "note": note,
        "scope": tools if config["scope"] is None else config["scope"],
        "review_risks": config["review_risks"],
        "queue": config["queue"],
        "escalation_queue": config["escalation_queue"],
        "sla_minutes": "" if config["sla_minutes"] is None else str(config["sla_minutes"]),
        "on_foreign_subject": config["on_foreign_subject"],
        "sums_window_hours": str(config["sums_window_hours"]),
        **{name: str(value) for name, value in config["limits"].items()},
        **{
            f"tier__{kind}": ", ".join(f"{r['model']}@{r['endpoint']}" for r in routes)
            for kind, routes in config["model_tiers"].items()
        },
        "rules-TOTAL_FORMS": str(len(config["rules"]) + 1),
        "rules-INITIAL_FORMS": str(len(config["rules"])),
        "rules-MIN_NUM_FORMS": "0",
        "rules-MAX_NUM_FORMS": "1000",
    }
    for tool in tools:
        threshold = config["thresholds"].get(tool)
        data[f"threshold__{tool}"] = "" if threshold is None else str(threshold)
        data[f"queue__{tool}"] = config["tool_queues"].get(tool, "")
    for i, rule in enumerate(config["rules"]):
        for key in ("name", "when", "description"):
            data[f"rules-{i}-{key}"] = rule[key]
        data[f"rules-{i}-tools"] = rule["tools"]
        data[f"rules-{i}-queue"] = rule["queue"] or ""
        data[f"rules-{i}-approvals"] = str(rule["approvals"])
    n = len(config["rules"])  # the blank extra row, as the browser sends it
    data.update({f"rules-{n}-name": "", f"rules-{n}-when": "", f"rules-{n}-approvals": "1"})
    return data


# --- the permission matrix --------------------------------------------------------------------

GETS = {
    "list": ("/agents/", {"operator": 200, "auditor": 200, "reviewer": 403, "outsider": 403}),
    "detail": (
        "/agents/support/",
        {"operator": 200, "auditor": 200, "reviewer": 404, "outsider": 404},
    ),
    "version": (
        "/agents/support/versions/2/",
        {"operator": 200, "auditor": 200, "reviewer": 404, "outsider": 404},
    ),
    "new": (
        "/agents/support/new",
        {"operator": 200, "auditor": 403, "reviewer": 404, "outsider": 404},
    ),
}


@pytest.mark.parametrize("page_name", list(GETS))
@pytest.mark.parametrize("persona", PERSONAS)
def test_who_may_see_each_page(
    people: dict[str, Any], versions: Any, page_name: str, persona: str
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


@pytest.mark.parametrize(
    ("persona", "status"),
    [("auditor", 403), ("reviewer", 404), ("outsider", 404), ("anonymous", 302)],
)
def test_only_operators_may_activate(
    people: dict[str, Any], versions: Any, persona: str, status: int
) -> None:
    before = _state()
    client = _client(people[persona])

    confirmed = {"confirm": "True", "expected_active": "1"}
    response = client.post("/agents/support/versions/2/activate", confirmed)
    confirmation = client.get("/agents/support/versions/2/activate")

    assert (response.status_code, confirmation.status_code) == (status, status)
    assert _state() == before


@pytest.mark.parametrize(
    ("persona", "status"),
    [("auditor", 403), ("reviewer", 404), ("outsider", 404), ("anonymous", 302)],
)
def test_only_operators_may_create_a_version(
    people: dict[str, Any], versions: Any, persona: str, status: int
) -> None:
    config = copy.deepcopy(versions[1].config)
    config["thresholds"]["issue_refund"] = 0.3
    config["model_tiers"]["decision"] = [{"model": "gpt-4.1", "endpoint": "default"}]
    config["limits"]["max_steps"] = 5
    before = _state()

    response = _client(people[persona]).post("/agents/support/new", _form_data(config))

    assert response.status_code == status
    assert _state() == before


def test_an_unknown_agent_is_404_for_an_operator(operator: Any) -> None:
    client = _client(operator)
    assert client.get("/agents/nobody/").status_code == 404
    assert client.get("/agents/support/versions/9/").status_code == 404
    assert client.post("/agents/nobody/versions/1/activate").status_code == 404
    assert AgentConfigVersion.objects.count() == 0


def _confirmed(active: int) -> dict[str, str]:
    """What the confirmation page's form posts, confirmed against version ``active``."""
    return {"confirm": "True", "expected_active": str(active)}


def test_activation_shows_the_diff_and_asks_for_confirmation_first(
    operator: Any, versions: Any
) -> None:
    before = _state()
    client = _client(operator)

    page = client.get("/agents/support/versions/2/activate")

    body = page.content.decode()
    assert page.status_code == 200
    assert "Activate support to version 2?" in body
    assert "Diff: version 1 (active) → version 2" in body
    assert "<code>thresholds.issue_refund</code>" in body
    assert 'action="/agents/support/versions/2/activate"' in body
    assert 'name="expected_active" value="1"' in body
    assert 'name="confirm" value="True"' in body
    assert _state() == before


@pytest.mark.parametrize(
    "data",
    [{}, {"confirm": "True"}, {"expected_active": "1"}, {"confirm": "", "expected_active": "1"}],
)
def test_an_activation_posted_without_its_confirmation_is_400_and_changes_nothing(
    operator: Any, versions: Any, data: dict[str, str]
) -> None:
    before = _state()

    response = _client(operator).post("/agents/support/versions/2/activate", data)

    assert response.status_code == 400
    body = response.content.decode()
    assert "Check the changes below, then confirm the activation." in body
    assert "Diff: version 1 (active) → version 2" in body
    assert _state() == before


def test_a_confirmation_made_against_a_version_no_longer_active_is_asked_again(
    operator: Any, release_manager: Any, versions: Any
) -> None:
    """Two operators at once: the second confirmed the diff against version 1, but the
    first activated version 2 meanwhile; the second sees the diff against 2 and nothing
    changes until they confirm again."""
    v1 = versions[0]
    config = copy.deepcopy(v1.config)
    config["thresholds"]["send_reply"] = 0.9
    configuration.config_version_create(agent_name=AGENT, config=config, note="v3", user=operator)
    first, second = _client(operator), _client(release_manager)
    assert first.post("/agents/support/versions/2/activate", _confirmed(1)).status_code == 302
    before = _state()

    response = second.post("/agents/support/versions/3/activate", _confirmed(1))

    assert response.status_code == 409
    body = response.content.decode()
    assert "Version 2 was activated after you looked" in body
    assert "Diff: version 2 (active) → version 3" in body
    assert 'name="expected_active" value="2"' in body
    assert _state() == before
    assert second.post("/agents/support/versions/3/activate", _confirmed(2)).status_code == 302
    assert services.config_active(agent_name=AGENT).number == 3


def test_a_version_whose_queue_was_deleted_since_cannot_be_activated(
    operator: Any, versions: Any
) -> None:
    """Invariant 10: a version naming a queue deleted after it was saved would strand its
    requests; the confirmation names the queue and activation is refused."""
    config = copy.deepcopy(versions[0].config)
    config["escalation_queue"] = "support-leads"
    configuration.config_version_create(agent_name=AGENT, config=config, note="v3", user=operator)
    Queue.objects.filter(slug="support-leads").delete()
    before = _state()
    client = _client(operator)

    page = client.get("/agents/support/versions/3/activate").content.decode()
    response = client.post("/agents/support/versions/3/activate", _confirmed(1))

    assert "<code>escalation_queue</code> names <code>support-leads</code>" in page
    assert 'action="/agents/support/versions/3/activate"' not in page
    assert (response.status_code, response["Location"]) == (302, "/agents/support/")
    shown = client.get("/agents/support/").content.decode()
    assert (
        "Configuration version 3 names queues that do not exist: escalation_queue names "
        "&#x27;support-leads&#x27;"
    ) in shown
    assert _state() == before


# --- the operator's flow ---------------------------------------------------------------------


def test_the_form_starts_from_the_active_version(operator: Any, versions: Any) -> None:
    response = _client(operator).get("/agents/support/new")

    body = response.content.decode()
    assert response.status_code == 200
    assert 'name="threshold__issue_refund" value="0.8"' in body
    assert 'name="queue__issue_refund" value="refunds"' in body
    assert 'name="rules-0-when" value="amount + sums.record.total &gt; 100.0"' in body
    assert 'name="rules-1-approvals" value="2"' in body
    assert 'name="rules-TOTAL_FORMS" value="4"' in body  # three rules and a blank row


def test_an_operator_creates_a_version_sees_its_diff_and_activates_it(
    operator: Any, versions: Any
) -> None:
    client = _client(operator)
    config = copy.deepcopy(versions[0].config)
    config["thresholds"]["issue_refund"] = 0.4
    config["rules"].append(
        {
            "name": "cancel_two_person",
            "when": "true",
            "tools": ["cancel_order"],
            "queue": "refunds-senior",
            "approvals": 2,
            "description": "Two people for a cancellation",
        }
    )

    response = client.post("/agents/support/new", _form_data(config, note="Stricter"))

    assert response.status_code == 302
    assert response["Location"] == "/agents/support/versions/3/"
    v3 = AgentConfigVersion.objects.get(agent_name=AGENT, number=3)
    assert v3.config == config
    assert (v3.note, v3.created_by) == ("Stricter", operator)
    assert services.config_active(agent_name=AGENT).number == 1

    page = client.get(response["Location"]).content.decode()
    assert "Saved version 3. It is not active yet" in page
    assert "thresholds.issue_refund" in page
    assert "rules.cancel_two_person" in page
    assert 'href="/agents/support/versions/3/activate"' in page
    assert "Activate version 3…" in page

    response = client.post("/agents/support/versions/3/activate", _confirmed(1))
    assert (response.status_code, response["Location"]) == (302, "/agents/support/")
    assert services.config_active(agent_name=AGENT).number == 3
    page = client.get("/agents/support/").content.decode()
    assert "Activated version 3; new runs use it (production is now release 2)." in page
    assert "Roll back to this" in page  # versions 1 and 2 are earlier now

    response = client.post("/agents/support/versions/1/activate", _confirmed(3))
    assert response.status_code == 302
    assert services.config_active(agent_name=AGENT).number == 1
    assert (
        "Rolled back to version 1; new runs use it (production is now release 1)."
        in client.get("/agents/support/").content.decode()
    )
    moves = AuditEvent.objects.filter(
        verb="release.label_moved", object_type="release", object_id=AGENT
    ).filter(after__label="production")
    assert [
        (e.before.get("config"), e.after["config"], e.after["kind"], e.actor_label)
        for e in moves.order_by("seq")
    ] == [
        (None, 1, "initial", "system"),
        (1, 3, "activation", "otto"),
        (3, 1, "rollback", "otto"),
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["rules"][0].update(when="args.amount >"), "does not parse"),
        (lambda c: c["rules"][0].update(approvals=0), "Ensure this value is greater than or"),
        (lambda c: c["thresholds"].update(issue_refund=1.5), "less than or equal to 1"),
        (lambda c: c.update(queue="support queue"), "Enter a valid"),
        (lambda c: c["rules"][1].update(name="refund_over_100"), "rule names must be unique"),
    ],
)
def test_invalid_input_re_renders_with_errors_and_saves_nothing(
    operator: Any, versions: Any, change: Any, message: str
) -> None:
    config = copy.deepcopy(versions[0].config)
    change(config)
    before = _state()

    response = _client(operator).post("/agents/support/new", _form_data(config))

    assert response.status_code == 400
    assert message in response.content.decode()
    assert _state() == before


def test_the_form_refuses_a_misspelt_queue_naming_the_field_and_saves_nothing(
    operator: Any, versions: Any
) -> None:
    config = copy.deepcopy(versions[0].config)
    config["tool_queues"]["issue_refund"] = "refunds-seniro"
    config["rules"][0]["queue"] = "no-such-queue"
    before = _state()

    response = _client(operator).post("/agents/support/new", _form_data(config))

    assert response.status_code == 400
    body = response.content.decode()
    missing = (
        "{where}: the queue '{slug}' does not exist; name an existing queue, or have an admin "
        "create it first (Queues, or the admin): a request sent to a queue nobody reviews "
        "would wait unseen"
    )
    # Each next to its field.
    assert _error_after(body, "queue__issue_refund") == [
        missing.format(where="tool_queues.issue_refund", slug="refunds-seniro")
    ]
    assert _error_after(body, "rules-0-queue") == [
        missing.format(where="rules[1].queue", slug="no-such-queue")
    ]
    assert "Nothing was saved: 2 problems to fix." in body
    assert _state() == before
    assert Queue.objects.filter(slug__in=["refunds-seniro", "no-such-queue"]).count() == 0


def test_the_form_shows_limits_tiers_and_endpoint_aliases_never_urls_or_keys(
    operator: Any, versions: Any, settings: Any
) -> None:
    settings.AGENTDESK_LLM_ENDPOINTS = {
        "default": {"base_url": "http://models.internal:8100/v1", "api_key": "sk-live-123"},
        "backup": {"base_url": "http://backup.internal:8100/v1", "api_key": "sk-live-456"},
    }

    body = _client(operator).get("/agents/support/new").content.decode()

    assert 'name="tier__decision" value="gpt-4o@default, gpt-4o-mini@default"' in body
    assert 'name="tier__routing" value="gpt-4o-mini@default, gpt-4o@default"' in body
    assert 'name="max_steps" value="40"' in body
    assert 'name="max_cost_usd" value="0.25"' in body
    assert 'name="escalation_queue" value="support"' in body
    assert "Configured endpoints: <code>backup</code>, <code>default</code>." in body
    for secret in ("models.internal", "backup.internal", "sk-live"):
        assert secret not in body


def test_an_operator_switches_the_decision_model_and_sees_it_in_the_diff(
    operator: Any, versions: Any
) -> None:
    client = _client(operator)
    config = copy.deepcopy(versions[0].config)
    config["model_tiers"]["decision"] = [
        {"model": "gpt-4.1", "endpoint": "default"},
        {"model": "gpt-4o", "endpoint": "default"},
    ]
    config["limits"].update(max_steps=12, on_exceeded="escalate")
    config.update(escalation_queue="support-leads", sla_minutes=20)

    response = client.post("/agents/support/new", _form_data(config, note="Stronger decisions"))

    assert (response.status_code, response["Location"]) == (302, "/agents/support/versions/3/")
    assert AgentConfigVersion.objects.get(agent_name=AGENT, number=3).config == config
    page = client.get(response["Location"]).content.decode()
    assert "<code>gpt-4.1@default</code> → <code>gpt-4o@default</code>" in page
    assert (
        "stuck runs wait in <code>support-leads</code>; requests are due after 20 minutes" in page
    )
    assert "12 steps" in page
    assert "model_tiers.decision" in page
    assert "gpt-4o@default, gpt-4o-mini@default" in page  # the active version's, in the diff


def _tier(text: str) -> Any:
    return lambda data: data.update(tier__decision=text)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            _tier("gpt-4o@lab"),
            "model_tiers.decision[1].endpoint: the endpoint &#x27;lab&#x27; is not configured; "
            "the configured endpoint aliases are [&#x27;default&#x27;]",
        ),
        (
            _tier("gpt-4o"),
            "&#x27;gpt-4o&#x27; is not model@endpoint; write the models in order, separated by "
            "commas, such as gpt-4o@default, gpt-4o-mini@default.",
        ),
        (_tier("gpt-4o@default, "), "&#x27;(empty)&#x27; is not model@endpoint"),
        (_tier(""), "This field is required."),
        (
            _tier("gpt-4o@default, gpt-4o@default"),
            "model_tiers.decision: lists gpt-4o@default twice",
        ),
        (lambda d: d.update(max_steps="0"), "Ensure this value is greater than or equal to 1."),
        (lambda d: d.update(max_cost_usd="ten"), "Enter a number."),
        (lambda d: d.update(max_cost_usd="0"), "Ensure this value is greater than or equal to"),
        (lambda d: d.update(on_exceeded="retry"), "Select a valid choice. retry is not one of"),
        (lambda d: d.update(sla_minutes="0"), "Ensure this value is greater than or equal to 1."),
        (lambda d: d.update(escalation_queue="team leads"), "Enter a valid"),
    ],
)
def test_invalid_limits_or_tiers_are_refused_with_the_message_and_nothing_saved(
    operator: Any, versions: Any, settings: Any, change: Any, message: str
) -> None:
    settings.AGENTDESK_LLM_ENDPOINTS = {
        "default": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-test"}
    }
    data = _form_data(versions[0].config)
    change(data)
    before = _state()

    response = _client(operator).post("/agents/support/new", data)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert _state() == before


def _error_after(body: str, name: str) -> list[str]:
    """The errors shown right after the input named ``name`` (as the form renders them)."""
    input_tag = re.search(rf'<input[^>]*name="{re.escape(name)}"[^>]*>', body)
    assert input_tag is not None, name
    shown = re.match(r'(?:<span class="error">[^<]*</span>)*', body[input_tag.end() :])
    assert shown is not None
    return [html.unescape(e) for e in re.findall(r'<span class="error">([^<]*)</span>', shown[0])]


def test_every_error_is_shown_at_once_each_at_its_field_and_nothing_is_saved(
    operator: Any, versions: Any, settings: Any
) -> None:
    """A field the form refuses, a rule whose CEL does not parse, a misspelt variable in
    another, an endpoint that is not configured and a queue that does not exist: one
    submit shows them all, each next to its field and naming it; nothing is saved."""
    settings.AGENTDESK_LLM_ENDPOINTS = {
        "default": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-test"}
    }
    config = copy.deepcopy(versions[0].config)
    config["rules"][0]["when"] = "args.amount >"
    config["rules"][2]["when"] = "ammount > 100"
    config["tool_queues"]["cancel_order"] = "refunds-seniro"
    data = _form_data(config)
    data["max_steps"] = "0"  # the form's own check
    data["tier__decision"] = "gpt-4o@lab, gpt-4o-mini@default"
    before = _state()

    response = _client(operator).post("/agents/support/new", data)

    assert response.status_code == 400
    body = response.content.decode()
    assert _error_after(body, "max_steps") == ["Ensure this value is greater than or equal to 1."]
    [parse] = _error_after(body, "rules-0-when")
    assert parse.startswith("rules[1].when: the rule 'args.amount >' does not parse: ")
    assert _error_after(body, "rules-2-when") == [
        "rules[3].when: unknown variable 'ammount' (did you mean 'amount'?); a rule reads "
        "args, input, tool, risk, confidence, run, subject, amount, facts, sums"
    ]
    assert _error_after(body, "tier__decision") == [
        "model_tiers.decision[1].endpoint: the endpoint 'lab' is not configured; the "
        "configured endpoint aliases are ['default']"
    ]
    [missing] = _error_after(body, "queue__cancel_order")
    assert missing.startswith(
        "tool_queues.cancel_order: the queue 'refunds-seniro' does not exist; "
    )
    for name in ("queue", "escalation_queue", "rules-1-when", "tier__routing", "max_tokens"):
        assert _error_after(body, name) == []
    # The summary above the form lists the same five, each naming its field.
    summary = re.search(r'<div class="flash flash-error error-summary".*?</div>', body, re.S)
    assert summary is not None
    items = [html.unescape(i) for i in re.findall(r"<li><a [^>]*>([^<]*)</a></li>", summary[0])]
    assert "Nothing was saved: 5 problems to fix." in summary[0]
    assert [item.split(":")[0] for item in items] == [
        "limits.max_steps",
        "tool_queues.cancel_order",
        "model_tiers.decision[1].endpoint",
        "rules[1].when",
        "rules[3].when",
    ]
    assert items[0] == "limits.max_steps: Ensure this value is greater than or equal to 1."
    assert _state() == before
    assert Queue.objects.filter(slug="refunds-seniro").count() == 0


def test_an_unchanged_form_is_refused(operator: Any, versions: Any) -> None:
    before = _state()

    response = _client(operator).post("/agents/support/new", _form_data(versions[0].config))

    assert response.status_code == 400
    assert "Version 1 has exactly this configuration already" in response.content.decode()
    assert _state() == before


def test_a_form_equal_to_an_older_inactive_version_is_refused(operator: Any, versions: Any) -> None:
    client = _client(operator)
    assert client.post("/agents/support/versions/2/activate", _confirmed(1)).status_code == 302
    before = _state()
    assert before[1] == 2

    response = client.post("/agents/support/new", _form_data(versions[0].config))

    assert response.status_code == 400
    assert (
        "Version 1 has exactly this configuration already; nothing to save. To use it, make "
        "a release of it."
    ) in response.content.decode()
    assert _state() == before


def test_the_diff_comes_as_a_fragment_for_htmx(auditor: Any, versions: Any) -> None:
    client = _client(auditor)

    fragment = client.get("/agents/support/versions/2/", headers={"HX-Request": "true"})
    page = client.get("/agents/support/versions/2/")

    assert fragment.status_code == page.status_code == 200
    body = fragment.content.decode()
    assert "<html" not in body
    assert "thresholds.issue_refund" in body
    assert "Diff: version 1 (active) → version 2" in body
    assert "Activate version 2" not in page.content.decode()  # an auditor cannot


def test_the_diff_against_another_version(auditor: Any, versions: Any) -> None:
    response = _client(auditor).get("/agents/support/versions/1/?against=2")

    assert response.status_code == 200
    assert "Diff: version 2 → version 1" in response.content.decode()


def test_the_list_shows_each_agent_s_active_version(auditor: Any, versions: Any) -> None:
    body = _client(auditor).get("/agents/").content.decode()

    assert 'href="/agents/support/versions/1/">v1</a>' in body
    assert SUPPORT_POLICY.version in body


@pytest.mark.parametrize(
    ("persona", "shown"),
    [("operator", True), ("auditor", True), ("reviewer", False), ("outsider", False)],
)
def test_the_nav_link_is_shown_to_who_may_see(
    people: dict[str, Any], persona: str, shown: bool
) -> None:
    body = _client(people[persona]).get("/runs/").content.decode()

    assert ('href="/agents/"' in body) is shown


def test_the_audit_log_links_a_configuration_event_to_the_agent(
    auditor: Any, versions: Any
) -> None:
    body = _client(auditor).get("/audit/?verb=config.").content.decode()

    assert 'href="/agents/support/"' in body


def test_the_activation_message_names_the_moves_kind_not_the_numbers_order(
    operator: Any, versions: Any
) -> None:
    """An older version that never served is an activation; a newer one that did, a rollback."""
    client = _client(operator)
    config = copy.deepcopy(versions[0].config)
    config["thresholds"]["issue_refund"] = 0.3
    configuration.config_version_create(agent_name=AGENT, config=config, note="v3", user=operator)
    client.post("/agents/support/versions/3/activate", _confirmed(1))

    client.post("/agents/support/versions/2/activate", _confirmed(3))  # older, never served
    assert (
        "Activated version 2; new runs use it (production is now release 3)."
        in client.get("/agents/support/").content.decode()
    )
    client.post("/agents/support/versions/3/activate", _confirmed(2))  # newer, served before
    assert (
        "Rolled back to version 3; new runs use it (production is now release 2)."
        in client.get("/agents/support/").content.decode()
    )
    kinds = AuditEvent.objects.filter(
        verb="release.label_moved", object_type="release", after__label="production"
    ).order_by("seq")
    assert [e.after["kind"] for e in kinds] == ["initial", "activation", "activation", "rollback"]
