"""A run under its configuration version: task kinds, model tiers, limits and escalation.

Each run keeps the version it was created with to its end: its tiers pick the model of each
step, its limits stop it, its escalation queue and SLA take it to a person. Steps are
driven in this process against the simulator, as in test_resilience.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from agents.definition import TaskContext
from examples.support.agent import support_task_kind
from examples.support.seed import seed_shop
from releases import configuration
from releases import services as releases
from releases.models import AgentConfigVersion
from reviews.models import ApprovalRequest, Queue
from runs import services
from runs.models import Run, RunState, StepKind
from tests.processes import Simulator
from tests.runs.factories import drive, seeded_ticket_input

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("use_test_agents")]

AGENT = "support"
REFUND_TICKET = "T-0002"  # damaged item: look up, check the policy, refund, reply
WHERE_TICKET = "T-0001"  # where is my order: look up, reply


@pytest.fixture
def shop(db: None) -> None:
    seed_shop()


def _submit(ticket: str = REFUND_TICKET) -> Run:
    return services.run_submit(agent_name=AGENT, run_input=seeded_ticket_input(ticket))[0]


def _route(model: str, endpoint: str = "default") -> dict[str, str]:
    return {"model": model, "endpoint": endpoint}


def _activate(operator: Any, **changes: Any) -> AgentConfigVersion:
    """A new version from the active one with ``changes`` (limits merged), made active."""
    active = releases.config_active(agent_name=AGENT)
    config = copy.deepcopy(configuration.config_effective(version=active))
    config["limits"].update(changes.pop("limits", {}))
    config["model_tiers"].update(changes.pop("model_tiers", {}))
    config.update(changes)
    version = configuration.config_version_create(
        agent_name=AGENT, config=config, note="test", user=operator
    )
    move = releases.release_activate_config(agent_name=AGENT, number=version.number, user=operator)
    assert (move.kind, move.to_release.config_version) == ("activation", version)
    return version


def _model_trail(run: Run) -> list[tuple[str, str, str, str, int]]:
    """Per model step: its task kind, route, model, error class and attempt."""
    return [
        (s.state["task_kind"], s.route, s.model, s.error_class, s.attempt)
        for s in run.steps.filter(kind=StepKind.MODEL).order_by("seq")
    ]


# --- task kinds --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tools_called", "kind"),
    [
        ((), "routing"),
        (("lookup_order",), "decision"),
        (("lookup_customer", "search_refund_policy"), "decision"),
        (("lookup_order", "issue_refund"), "drafting"),
        (("lookup_order", "handoff_to_human"), "drafting"),
        (("lookup_order", "send_reply"), "drafting"),
    ],
)
def test_the_example_agent_s_task_kind_follows_the_tools_that_returned(
    tools_called: tuple[str, ...], kind: str
) -> None:
    context = TaskContext(tools_called=tools_called, input={}, model_steps=len(tools_called))

    assert support_task_kind(context) == kind


def test_each_model_step_is_served_by_its_task_kind_s_tier(
    shop: None, model_endpoint: Simulator
) -> None:
    run = drive(_submit())

    assert run.state == RunState.SUCCEEDED
    tools = [s.action["tool"] for s in run.steps.filter(kind=StepKind.TOOL).order_by("seq")]
    assert tools == ["lookup_order", "search_refund_policy", "issue_refund", "send_reply"]
    # Routing and drafting on the small model; the refund is decided by the stronger one.
    assert _model_trail(run) == [
        ("routing", "gpt-4o-mini@default", "gpt-4o-mini", "", 1),
        ("decision", "gpt-4o@default", "gpt-4o", "", 1),
        ("decision", "gpt-4o@default", "gpt-4o", "", 1),
        ("drafting", "gpt-4o-mini@default", "gpt-4o-mini", "", 1),
        ("drafting", "gpt-4o-mini@default", "gpt-4o-mini", "", 1),
    ]


def test_a_tool_call_that_returned_an_error_does_not_change_the_kind(
    shop: None, model_endpoint: Simulator
) -> None:
    model_endpoint.configure(schema_invalid_rate=1.0)
    run = _submit()
    services.run_step_execute(run_id=str(run.id), seq=0)  # proposes a lookup, malformed
    services.run_step_execute(run_id=str(run.id), seq=1)  # refused: tool_args_invalid
    model_endpoint.configure(schema_invalid_rate=0)

    services.run_step_execute(run_id=str(run.id), seq=2)

    run.refresh_from_db()
    assert run.steps.get(seq=1).error_class == "tool_args_invalid"
    assert run.steps.get(seq=2).state["task_kind"] == "routing"


def test_a_step_of_another_kind_starts_its_own_chain_at_the_top(
    shop: None, model_endpoint: Simulator
) -> None:
    run = _submit(WHERE_TICKET)
    services.run_step_execute(run_id=str(run.id), seq=0)  # routing: proposes the lookup
    services.run_step_execute(run_id=str(run.id), seq=1)  # the lookup returns
    # As if routing had moved along its chain (a malformed reply next to a valid call).
    run.refresh_from_db()
    run.checkpoint.update(link=1, link_kind="routing", attempt=2)
    run.save(update_fields=["checkpoint"])

    services.run_step_execute(run_id=str(run.id), seq=2)

    step = run.steps.get(seq=2)
    assert (step.state["task_kind"], step.route, step.attempt) == (
        "decision",
        "gpt-4o@default",
        1,
    )


# --- model tiers -------------------------------------------------------------------------


def test_a_tier_s_fallback_serves_when_its_primary_endpoint_fails(
    shop: None, model_endpoint: Simulator, settings: Any, operator: Any
) -> None:
    settings.AGENTDESK_LLM_ENDPOINTS = {
        **settings.AGENTDESK_LLM_ENDPOINTS,
        "down": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-test"},  # nothing listens
    }
    _activate(operator, model_tiers={"decision": [_route("gpt-4o", "down"), _route("gpt-4.1")]})

    run = drive(_submit(WHERE_TICKET))

    assert run.state == RunState.SUCCEEDED
    assert _model_trail(run) == [
        ("routing", "gpt-4o-mini@default", "gpt-4o-mini", "", 1),
        ("decision", "gpt-4o@down", "", "model_connection_error", 1),
        ("decision", "gpt-4o@down", "", "model_connection_error", 2),
        ("decision", "gpt-4o@down", "", "model_connection_error", 3),
        ("decision", "gpt-4.1@default", "gpt-4.1", "", 1),
        ("drafting", "gpt-4o-mini@default", "gpt-4o-mini", "", 1),
    ]


def test_switching_the_decision_model_changes_new_runs_only(
    shop: None, model_endpoint: Simulator, operator: Any
) -> None:
    old = _submit()
    services.run_step_execute(run_id=str(old.id), seq=0)  # routing done under version 1

    _activate(operator, model_tiers={"decision": [_route("gpt-4.1"), _route("gpt-4o")]})
    new = drive(_submit())
    old = drive(old)

    assert (old.config_version.number, new.config_version.number) == (1, 2)
    # Each run records the production release it was created under, and keeps it.
    assert [(r.release.number, r.release.config_version.number) for r in (old, new)] == [
        (1, 1),
        (2, 2),
    ]
    assert old.state == new.state == RunState.SUCCEEDED
    # Every decision step of each run on its own version's model. (How many there are
    # depends on the shop: both runs refund the same order, and whichever comes second
    # finds it refunded.)
    decisions = {
        run.config_version.number: {t[1:3] for t in _model_trail(run) if t[0] == "decision"}
        for run in (old, new)
    }
    assert decisions == {
        1: {("gpt-4o@default", "gpt-4o")},
        2: {("gpt-4.1@default", "gpt-4.1")},
    }


def test_an_endpoint_alias_since_removed_from_the_environment_is_skipped(
    shop: None, model_endpoint: Simulator, settings: Any, operator: Any
) -> None:
    simulator = settings.AGENTDESK_LLM_ENDPOINTS["default"]
    settings.AGENTDESK_LLM_ENDPOINTS = {"default": simulator, "backup": simulator}
    _activate(operator, model_tiers={"decision": [_route("gpt-4o", "backup"), _route("gpt-4.1")]})
    settings.AGENTDESK_LLM_ENDPOINTS = {"default": simulator}  # a deploy dropped "backup"

    run = drive(_submit(WHERE_TICKET))

    assert run.state == RunState.SUCCEEDED
    decision = run.steps.get(kind=StepKind.MODEL, state__task_kind="decision")
    assert (decision.route, decision.model, decision.error_class) == (
        "gpt-4.1@default",
        "gpt-4.1",
        "",
    )
    assert decision.outcome["skipped_unconfigured_endpoints"] == ["gpt-4o@backup"]


# --- limits, escalation and SLA -----------------------------------------------------------


def test_a_version_s_limits_stop_new_runs_while_older_ones_continue(
    shop: None, model_endpoint: Simulator, operator: Any
) -> None:
    old = _submit()
    services.run_step_execute(run_id=str(old.id), seq=0)

    _activate(operator, limits={"max_steps": 3})
    new = drive(_submit())
    old = drive(old)

    assert (new.state, new.next_seq, new.steps.count()) == (RunState.FAILED, 3, 3)
    assert new.error == {
        "class": "budget_exceeded",
        "message": "the run reached its limit of 3 steps",
    }
    assert old.state == RunState.SUCCEEDED
    assert old.next_seq == 9  # five model steps and four tool steps, under version 1's 40


def test_a_version_escalates_to_its_queue_with_its_sla(
    shop: None, model_endpoint: Simulator, operator: Any
) -> None:
    Queue.objects.create(
        slug="support-leads", name="Support leads"
    )  # versions name queues that exist
    _activate(
        operator,
        limits={"max_steps": 3, "on_exceeded": "escalate"},
        escalation_queue="support-leads",
        sla_minutes=7,
    )

    run = drive(_submit())

    assert (run.state, run.error["class"]) == (RunState.NEEDS_HUMAN, "budget_exceeded")
    request = ApprovalRequest.objects.select_related("queue").get(run=run)
    assert (request.kind, request.queue.slug, request.policy_version) == (
        "run",
        "support-leads",
        run.config_version.policy_version,
    )
    assert abs(request.due_at - request.created_at - timedelta(minutes=7)) < timedelta(seconds=1)


# --- the run's page ---------------------------------------------------------------------------


def test_the_run_page_shows_the_release_each_run_was_created_under(
    shop: None, operator: Any
) -> None:
    old = _submit()
    _activate(operator, sla_minutes=9)
    new = _submit()
    legacy = Run.objects.create(  # created before releases existed
        agent_name=AGENT,
        input={},
        trace_id="trace-legacy",
        prompt_version="p",
        model="m",
        request_hash="h",
    )
    client = Client()
    client.force_login(operator)

    def shown(run: Run) -> str:
        page = client.get(f"/runs/{run.pk}/").content.decode()
        start = page.index('<dd id="run-release">')
        return page[start : page.index("</dd>", start) + len("</dd>")]

    assert shown(old) == '<dd id="run-release"><a href="/releases/support/1/">release 1</a></dd>'
    assert shown(new) == '<dd id="run-release"><a href="/releases/support/2/">release 2</a></dd>'
    assert shown(legacy) == (
        '<dd id="run-release"><span class="muted" title="Created before releases existed">'
        "none</span></dd>"
    )
    # Someone who may see every run but not releases reads the number, with no link.
    watcher = User.objects.create_user("wanda")
    watcher.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="runs", codename__in=["view_run", "view_all_runs"]
        )
    )
    client.force_login(watcher)
    assert shown(new) == '<dd id="run-release">release 2</dd>'
