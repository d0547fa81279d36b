"""Agent configuration versions: create, diff, activate, roll back; runs keep their version."""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections

from agentdesk import configuration
from agentdesk.configuration import ConfigRefused, config_from_policy
from agentdesk.models import AgentConfigActive, AgentConfigVersion, AuditEvent
from examples.support.review import SUPPORT_POLICY
from examples.support.seed import seed_shop
from reviews import services as review_services
from reviews.models import ApprovalRequest, RequestState
from runs import services as run_services
from runs.models import Action, Run, RunState
from tests.processes import Simulator
from tests.runs.factories import drive, seeded_ticket_input

AGENT = "support"


def _config(**changes: Any) -> dict[str, Any]:
    config = copy.deepcopy(config_from_policy(policy=SUPPORT_POLICY))
    config.update(changes)
    return config


def _state() -> tuple[list[tuple[int, str]], int | None, int]:
    """Everything a refused change must leave alone: versions, the active one, the log."""
    active = AgentConfigActive.objects.filter(agent_name=AGENT).first()
    return (
        list(AgentConfigVersion.objects.order_by("number").values_list("number", "policy_version")),
        active.version.number if active else None,
        AuditEvent.objects.count(),
    )


def _config_events(verb: str) -> list[tuple[Any, Any, str]]:
    return list(
        AuditEvent.objects.filter(verb=verb, object_type="agent_config", object_id=AGENT)
        .order_by("seq")
        .values_list("before", "after", "actor_label")
    )


# --- bootstrap -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_first_use_stores_the_code_declared_policy_as_version_1() -> None:
    version = configuration.config_active(agent_name=AGENT)
    again = configuration.config_active(agent_name=AGENT)

    assert (version.number, again.pk) == (1, version.pk)
    assert version.config == config_from_policy(policy=SUPPORT_POLICY)
    assert version.policy_version == SUPPORT_POLICY.version
    assert configuration.config_policy(version=version) == SUPPORT_POLICY
    assert version.created_by is None
    assert AgentConfigVersion.objects.count() == 1
    assert [(b, a["number"], who) for b, a, who in _config_events("config.version_created")] == [
        (None, 1, "system")
    ]
    assert _config_events("config.activated") == [
        ({"active": None}, {"active": 1, "policy_version": SUPPORT_POLICY.version}, "system")
    ]


# --- create, diff, activate, roll back ------------------------------------------------------


@pytest.mark.django_db
def test_create_diff_activate_and_roll_back(operator: Any) -> None:
    v1 = configuration.config_active(agent_name=AGENT)
    proposed = _config(
        thresholds={"send_reply": 0.6, "issue_refund": 0.5, "cancel_order": 0.8},
        rules=[
            *_config()["rules"],
            {
                "name": "cancel_two_person",
                "when": "true",
                "tools": ["cancel_order"],
                "queue": "refunds-senior",
                "approvals": 2,
                "description": "",
            },
        ],
    )

    v2 = configuration.config_version_create(
        agent_name=AGENT, config=proposed, note="Lower the refund threshold", user=operator
    )

    assert (v2.number, v2.note, v2.created_by) == (2, "Lower the refund threshold", operator)
    assert v2.policy_version == configuration.config_policy(version=v2).version
    assert v2.policy_version != v1.policy_version
    assert configuration.config_active(agent_name=AGENT) == v1  # created, not yet active
    created = _config_events("config.version_created")[-1]
    assert (created[1]["number"], created[1]["policy_version"], created[2]) == (
        2,
        v2.policy_version,
        "otto",
    )

    diff = configuration.config_diff(a=v1, b=v2)
    rule = '{"approvals": 2, "description": "", "name": "cancel_two_person", "queue": "refunds-senior", "tools": ["cancel_order"], "when": "true"}'  # noqa: E501
    assert diff.summary == [
        ("thresholds.issue_refund", "0.8", "0.5"),
        ("rules.cancel_two_person", "", rule),
    ]
    assert ("del", '-    "issue_refund": 0.8,') in diff.lines
    assert ("add", '+    "issue_refund": 0.5,') in diff.lines
    assert ("add", '+      "name": "cancel_two_person",') in diff.lines
    assert not configuration.config_diff(a=v2, b=v2).changed

    configuration.config_activate(agent_name=AGENT, number=2, user=operator)
    assert configuration.config_active(agent_name=AGENT) == v2

    configuration.config_activate(agent_name=AGENT, number=1, user=operator)  # roll back
    assert configuration.config_active(agent_name=AGENT) == v1
    assert AgentConfigVersion.objects.count() == 2  # a rollback creates nothing
    assert _config_events("config.activated")[1:] == [
        (
            {"active": 1, "policy_version": v1.policy_version},
            {"active": 2, "policy_version": v2.policy_version},
            "otto",
        ),
        (
            {"active": 2, "policy_version": v2.policy_version},
            {"active": 1, "policy_version": v1.policy_version},
            "otto",
        ),
    ]


@pytest.mark.django_db
def test_activating_the_active_or_a_missing_version_is_refused(operator: Any) -> None:
    configuration.config_active(agent_name=AGENT)
    before = _state()

    with pytest.raises(ConfigRefused, match="Version 1 is already active"):
        configuration.config_activate(agent_name=AGENT, number=1, user=operator)
    with pytest.raises(ConfigRefused, match="support has no version 7"):
        configuration.config_activate(agent_name=AGENT, number=7, user=operator)

    assert _state() == before


@pytest.mark.django_db
def test_a_version_identical_to_the_active_one_is_refused(operator: Any) -> None:
    configuration.config_active(agent_name=AGENT)
    before = _state()

    # The same content in another order is the same configuration.
    same = _config(thresholds={"cancel_order": 0.8, "issue_refund": 0.8, "send_reply": 0.6})
    with pytest.raises(ConfigRefused, match="same configuration as the active version 1"):
        configuration.config_version_create(
            agent_name=AGENT, config=same, note="no change", user=operator
        )

    assert _state() == before


BAD_RULE = {"name": "r", "when": "true", "tools": [], "queue": None, "approvals": 1}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rules": [{**BAD_RULE, "when": "args.amount >"}]}, "does not parse"),
        ({"rules": [{**BAD_RULE, "when": "  "}]}, "a rule needs an expression"),
        ({"rules": [{**BAD_RULE, "approvals": 0}]}, "approvals must be at least 1"),
        ({"rules": [{**BAD_RULE, "approvals": "2"}]}, "approvals must be a whole number"),
        ({"rules": [BAD_RULE, BAD_RULE]}, "rule names must be unique"),
        ({"rules": [{**BAD_RULE, "tools": ["teleport"]}]}, "does not have: ['teleport']"),
        ({"rules": [{**BAD_RULE, "queue": "Senior refunds!"}]}, "is not a slug"),
        ({"thresholds": {"teleport": 0.5}}, "does not have: ['teleport']"),
        ({"thresholds": {"issue_refund": 1.5}}, "must be between 0 and 1"),
        ({"thresholds": {"issue_refund": -0.1}}, "must be between 0 and 1"),
        ({"thresholds": {"issue_refund": "high"}}, "must be a number between 0 and 1"),
        ({"scope": ["lookup_order", "teleport"]}, "does not have: ['teleport']"),
        ({"queue": "support queue"}, "the default queue 'support queue' is not a slug"),
        ({"tool_queues": {"issue_refund": "refunds/senior"}}, "is not a slug"),
        ({"review_risks": ["catastrophic"]}, "review_risks must be a list of"),
        ({"limits": {"max_steps": 3}}, "unknown configuration fields ['limits']"),
    ],
)
def test_an_invalid_configuration_is_refused_and_nothing_is_saved(
    operator: Any, changes: dict[str, Any], message: str
) -> None:
    configuration.config_active(agent_name=AGENT)
    before = _state()

    with pytest.raises(ConfigRefused, match=message.replace("[", r"\[").replace("]", r"\]")):
        configuration.config_version_create(
            agent_name=AGENT, config=_config(**changes), note="bad", user=operator
        )

    assert _state() == before


@pytest.mark.django_db
def test_a_configuration_that_is_not_an_object_is_refused(operator: Any) -> None:
    configuration.config_active(agent_name=AGENT)
    before = _state()

    with pytest.raises(ConfigRefused, match="a configuration must be an object"):
        configuration.config_version_create(agent_name=AGENT, config=["x"], note="", user=operator)

    assert _state() == before


# --- runs keep their version ------------------------------------------------------------------


@pytest.fixture
def careful_model(model_endpoint: Simulator) -> Iterator[Simulator]:
    before = model_endpoint.configure()["mistake_rate"]
    model_endpoint.configure(mistake_rate=0.0)
    yield model_endpoint
    model_endpoint.configure(mistake_rate=before)


def _pending(run: Run) -> ApprovalRequest:
    return ApprovalRequest.objects.select_related("queue").get(run=run, state=RequestState.PENDING)


@pytest.mark.django_db
def test_a_run_in_flight_keeps_its_version_while_a_new_one_activates(
    careful_model: Simulator, operator: Any, reviewer: Any
) -> None:
    seed_shop()
    old, _ = run_services.run_submit(agent_name=AGENT, run_input=seeded_ticket_input("T-0002"))
    run_services.run_step_execute(run_id=str(old.id), seq=0)  # part way: the first model step
    old.refresh_from_db()
    assert old.state == RunState.RUNNING

    # Every refund, whatever its amount, now needs two senior reviewers.
    v2 = configuration.config_version_create(
        agent_name=AGENT,
        config=_config(
            rules=[
                {
                    "name": "every_refund_two_person",
                    "when": "true",
                    "tools": ["issue_refund"],
                    "queue": "refunds-senior",
                    "approvals": 2,
                    "description": "",
                }
            ]
        ),
        note="Two people for every refund",
        user=operator,
    )
    configuration.config_activate(agent_name=AGENT, number=2, user=operator)

    old = drive(old)
    new, _ = run_services.run_submit(agent_name=AGENT, run_input=seeded_ticket_input("T-0002"))
    new = drive(new)

    assert (old.config_version.number, new.config_version.number) == (1, 2)
    assert old.state == new.state == RunState.WAITING_FOR_APPROVAL
    old_request, new_request = _pending(old), _pending(new)
    # The old run follows version 1: an irreversible call, one reviewer, the refunds queue.
    assert (old_request.rule, old_request.queue.slug, old_request.approvals_required) == (
        "risk",
        "refunds",
        1,
    )
    # The new run follows version 2's new rule.
    assert (new_request.rule, new_request.queue.slug, new_request.approvals_required) == (
        "every_refund_two_person",
        "refunds-senior",
        2,
    )
    assert Action.objects.get(pk=old_request.action_id).policy_version == SUPPORT_POLICY.version
    assert Action.objects.get(pk=new_request.action_id).policy_version == v2.policy_version

    # An edit is judged by the run's version too: version 2's rule would send this refund
    # elsewhere and refuse the edit; version 1 lets it through.
    review_services.approval_edit(
        request_id=old_request.pk,
        user=reviewer,
        seen_hash=old_request.args_hash,
        arguments={**old_request.arguments, "amount": "10.00"},
    )
    old = drive(old)
    assert old.state == RunState.SUCCEEDED
    assert old.config_version.number == 1


# --- concurrency ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_activations_leave_one_active_version_and_one_event_each(
    operator: Any,
) -> None:
    configuration.config_active(agent_name=AGENT)
    for threshold in (0.1, 0.2, 0.3, 0.4):
        configuration.config_version_create(
            agent_name=AGENT,
            config=_config(thresholds={"issue_refund": threshold}),
            note=f"threshold {threshold}",
            user=operator,
        )
    numbers = [2, 3, 4, 5]
    barrier = threading.Barrier(len(numbers))
    errors: list[BaseException] = []

    def activate(number: int) -> None:
        try:
            barrier.wait()
            configuration.config_activate(agent_name=AGENT, number=number, user=operator)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=activate, args=(n,)) for n in numbers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert AgentConfigActive.objects.filter(agent_name=AGENT).count() == 1
    events = _config_events("config.activated")[1:]  # after the bootstrap's
    assert sorted(after["active"] for _, after, _ in events) == numbers
    # Each activation saw the one before it: the chain of before → after is unbroken.
    assert events[0][0]["active"] == 1
    for (_, previous, _), (before, _, _) in itertools.pairwise(events):
        assert before["active"] == previous["active"]
    active = configuration.config_active(agent_name=AGENT)
    assert active.number == events[-1][1]["active"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_uses_store_one_version_1() -> None:
    barrier = threading.Barrier(4)
    numbers: list[int] = []

    def first_use() -> None:
        try:
            barrier.wait()
            numbers.append(configuration.config_active(agent_name=AGENT).number)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert numbers == [1, 1, 1, 1]
    assert AgentConfigVersion.objects.filter(agent_name=AGENT).count() == 1
    assert len(_config_events("config.version_created")) == 1
    assert len(_config_events("config.activated")) == 1
