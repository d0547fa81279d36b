"""Agent configuration versions: create, diff, activate, roll back; runs keep their version."""

from __future__ import annotations

import copy
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from django.db import connections

from agents.registry import agent_get
from audit.models import AuditEvent
from examples.support.review import SUPPORT_POLICY
from examples.support.seed import seed_shop
from releases import configuration, services
from releases.config_documents import ConfigError
from releases.configuration import ConfigRefused, config_from_policy
from releases.models import AgentConfigVersion, PromptVersion, Release, ReleaseLabel
from reviews import services as review_services
from reviews.models import ApprovalRequest, Queue, RequestState
from runs import services as run_services
from runs.models import Action, Run, RunState
from tests.processes import Simulator
from tests.runs.factories import drive, seeded_ticket_input

AGENT = "support"


@pytest.fixture(autouse=True)
def _queues(support_queues: None) -> None:
    """Every queue the versions here name exists (see support_queues)."""
    for slug in ("support-leads", "frontline"):
        Queue.objects.create(slug=slug, name=slug)


def _route(model: str, endpoint: str = "default") -> dict[str, str]:
    return {"model": model, "endpoint": endpoint}


# What version 1 holds besides the policy: the example agent's code declarations.
CODE_RUNTIME: dict[str, Any] = {
    "limits": {
        "max_steps": 40,
        "max_tool_calls": 10,
        "max_tokens": 60_000,
        "max_cost_usd": "0.25",
        "deadline_s": 600,
        "on_exceeded": "fail",
    },
    "model_tiers": {
        "routing": [_route("gpt-4o-mini"), _route("gpt-4o")],
        "decision": [_route("gpt-4o"), _route("gpt-4o-mini")],
        "drafting": [_route("gpt-4o-mini"), _route("gpt-4o")],
    },
    "escalation_queue": "support",
    "sla_minutes": None,
}


def _config(**changes: Any) -> dict[str, Any]:
    config = copy.deepcopy({**config_from_policy(policy=SUPPORT_POLICY), **CODE_RUNTIME})
    config.update(changes)
    return config


@pytest.fixture(autouse=True)
def endpoints(settings: Any) -> None:
    """Two endpoint aliases, as AGENTDESK_LLM_ENDPOINTS=backup would configure them."""
    settings.AGENTDESK_LLM_ENDPOINTS = {
        "default": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-default-secret"},
        "backup": {"base_url": "http://127.0.0.1:9/v2", "api_key": "sk-backup-secret"},
    }


def _state() -> tuple[list[tuple[int, str]], int | None, int]:
    """Everything a refused change must leave alone: versions, the active one, the log."""
    production = ReleaseLabel.objects.filter(agent_name=AGENT, label="production").first()
    return (
        list(AgentConfigVersion.objects.order_by("number").values_list("number", "policy_version")),
        production.release.config_version.number if production else None,
        AuditEvent.objects.count(),
    )


def _config_events(verb: str) -> list[tuple[Any, Any, str]]:
    return list(
        AuditEvent.objects.filter(verb=verb, object_type="agent_config", object_id=AGENT)
        .order_by("seq")
        .values_list("before", "after", "actor_label")
    )


def _production_moves() -> list[tuple[Any, Any, str]]:
    """The production label's moves, oldest first: what activating a version writes."""
    return list(
        AuditEvent.objects.filter(
            verb="release.label_moved",
            object_type="release",
            object_id=AGENT,
            after__label="production",
        )
        .order_by("seq")
        .values_list("before", "after", "actor_label")
    )


def _production(release: int, config: AgentConfigVersion) -> dict[str, Any]:
    """How a move's audit event describes production at ``release`` with ``config``."""
    prompt = PromptVersion.objects.get(agent_name=AGENT, number=1)
    return {
        "label": "production",
        "number": release,
        "prompt": prompt.ref,
        "config": config.number,
        "policy_version": config.policy_version,
    }


# --- bootstrap -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_first_use_stores_the_code_declared_policy_as_version_1() -> None:
    version = services.config_active(agent_name=AGENT)
    again = services.config_active(agent_name=AGENT)

    assert (version.number, again.pk) == (1, version.pk)
    assert version.config == {**config_from_policy(policy=SUPPORT_POLICY), **CODE_RUNTIME}
    assert version.policy_version == SUPPORT_POLICY.version
    assert configuration.config_policy(version=version) == SUPPORT_POLICY
    assert version.created_by is None
    assert AgentConfigVersion.objects.count() == 1
    assert [(b, a["number"], who) for b, a, who in _config_events("config.version_created")] == [
        (None, 1, "system")
    ]
    # Release 1 pins both versions 1, and every label points at it from the first use.
    assert list(Release.objects.values_list("number", "config_version", "prompt_version")) == [
        (1, version.pk, PromptVersion.objects.get(agent_name=AGENT, number=1).pk)
    ]
    assert _production_moves() == [
        (
            {"label": "production", "number": None},
            {**_production(1, version), "kind": "initial", "gate": ""},
            "system",
        )
    ]


# --- create, diff, activate, roll back ------------------------------------------------------


@pytest.mark.django_db
def test_create_diff_activate_and_roll_back(operator: Any) -> None:
    v1 = services.config_active(agent_name=AGENT)
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
    assert services.config_active(agent_name=AGENT) == v1  # created, not yet active
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

    activation = services.release_activate_config(agent_name=AGENT, number=2, user=operator)
    assert services.config_active(agent_name=AGENT) == v2

    rollback = services.release_activate_config(agent_name=AGENT, number=1, user=operator)
    assert services.config_active(agent_name=AGENT) == v1
    assert (activation.kind, rollback.kind) == ("activation", "rollback")
    # A rollback creates nothing: production returns to release 1 (prompt 1, config 1).
    assert AgentConfigVersion.objects.count() == 2
    assert list(Release.objects.order_by("number").values_list("number", "config_version")) == [
        (1, v1.pk),
        (2, v2.pk),
    ]
    assert _production_moves()[1:] == [
        (
            _production(1, v1),
            {**_production(2, v2), "kind": "activation", "gate": activation.gate},
            "otto",
        ),
        (_production(2, v2), {**_production(1, v1), "kind": "rollback", "gate": ""}, "otto"),
    ]
    assert activation.gate.startswith("passed")


@pytest.mark.django_db
def test_activating_the_active_or_a_missing_version_is_refused(operator: Any) -> None:
    services.config_active(agent_name=AGENT)
    before = _state()

    with pytest.raises(services.ReleaseRefused, match="Version 1 is already active"):
        services.release_activate_config(agent_name=AGENT, number=1, user=operator)
    with pytest.raises(services.ReleaseRefused, match="support has no version 7"):
        services.release_activate_config(agent_name=AGENT, number=7, user=operator)

    assert _state() == before


@pytest.mark.django_db
def test_a_version_identical_to_the_active_one_is_refused(operator: Any) -> None:
    services.config_active(agent_name=AGENT)
    before = _state()

    # The same content in another order is the same configuration.
    same = _config(thresholds={"cancel_order": 0.8, "issue_refund": 0.8, "send_reply": 0.6})
    with pytest.raises(ConfigRefused, match="Version 1 has exactly this configuration already"):
        configuration.config_version_create(
            agent_name=AGENT, config=same, note="no change", user=operator
        )

    assert _state() == before


@pytest.mark.django_db
def test_a_version_identical_to_an_older_inactive_one_is_refused(operator: Any) -> None:
    """Not only the active version: any stored one, so a number never repeats a content."""
    v1 = services.config_active(agent_name=AGENT)
    configuration.config_version_create(
        agent_name=AGENT,
        config=_config(thresholds={"issue_refund": 0.5}),
        note="lower",
        user=operator,
    )
    services.release_activate_config(agent_name=AGENT, number=2, user=operator)
    before = (_state(), Release.objects.count())
    assert before[0][1] == 2  # version 1 is no longer active

    with pytest.raises(
        ConfigRefused,
        match=r"^Version 1 has exactly this configuration already; nothing to save\. To use "
        r"it, make a release of it\.$",
    ):
        configuration.config_version_create(
            agent_name=AGENT, config=copy.deepcopy(v1.config), note="back", user=operator
        )

    assert (_state(), Release.objects.count()) == before


BAD_RULE = {"name": "r", "when": "true", "tools": [], "queue": None, "approvals": 1}
SLUG = "must be a queue slug (letters, digits, hyphens, underscores), not"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"rules": [{**BAD_RULE, "when": "args.amount >"}]},
            "rules[1].when: the rule 'args.amount >' does not parse",
        ),
        ({"rules": [{**BAD_RULE, "when": "  "}]}, "rules[1].when: a rule needs an expression"),
        (
            {"rules": [{**BAD_RULE, "when": "amount > 100 && ammount < 5"}]},
            "rules[1].when: unknown variable 'ammount' (did you mean 'amount'?); a rule reads "
            "args, input, tool, risk, confidence, run, subject, amount, facts, sums",
        ),
        (
            {"rules": [{**BAD_RULE, "approvals": 0}]},
            "rules[1].approvals: must be a whole number of at least 1, not 0",
        ),
        (
            {"rules": [{**BAD_RULE, "approvals": "2"}]},
            "rules[1].approvals: must be a whole number of at least 1, not '2'",
        ),
        (
            {"rules": [BAD_RULE, BAD_RULE]},
            "rules[2].name: rule names must be unique: rules[1] is also named 'r'",
        ),
        (
            {"rules": [{**BAD_RULE, "tools": ["teleport"]}]},
            "rules[1].tools: names tools the agent does not have: ['teleport']",
        ),
        (
            {"rules": [{**BAD_RULE, "queue": "Senior refunds!"}]},
            f"rules[1].queue: {SLUG} 'Senior refunds!'",
        ),
        ({"thresholds": {"teleport": 0.5}}, "thresholds: names tools the agent does not have"),
        (
            {"thresholds": {"issue_refund": 1.5}},
            "thresholds.issue_refund: must be a number between 0 and 1, not 1.5",
        ),
        (
            {"thresholds": {"issue_refund": -0.1}},
            "thresholds.issue_refund: must be a number between 0 and 1, not -0.1",
        ),
        (
            {"thresholds": {"issue_refund": "high"}},
            "thresholds.issue_refund: must be a number between 0 and 1, not 'high'",
        ),
        (
            {"scope": ["lookup_order", "teleport"]},
            "scope: names tools the agent does not have: ['teleport']",
        ),
        ({"queue": "support queue"}, f"queue: {SLUG} 'support queue'"),
        (
            {"tool_queues": {"issue_refund": "refunds/senior"}},
            f"tool_queues.issue_refund: {SLUG} 'refunds/senior'",
        ),
        (
            {"review_risks": ["catastrophic"]},
            "review_risks: must be a list of ['irreversible', 'read', 'write'], not "
            "['catastrophic']",
        ),
        (
            {"on_foreign_subject": "allow"},
            "on_foreign_subject: must be one of ['block', 'review'], not 'allow'",
        ),
        (
            {"sums_window_hours": 0},
            "sums_window_hours: must be a whole number of hours from 1 to 43920, not 0",
        ),
        (
            {"sums_window_hours": "24"},
            "sums_window_hours: must be a whole number of hours from 1 to 43920, not '24'",
        ),
    ],
)
def test_an_invalid_configuration_is_refused_and_nothing_is_saved(
    operator: Any, changes: dict[str, Any], message: str
) -> None:
    """Each refusal names its field as the JSON spells it (lists counted from 1)."""
    services.config_active(agent_name=AGENT)
    before = _state()

    with pytest.raises(ConfigRefused) as refused:
        configuration.config_version_create(
            agent_name=AGENT, config=_config(**changes), note="bad", user=operator
        )

    [error] = refused.value.errors  # one thing wrong, one error
    assert str(error).startswith(message)
    assert str(refused.value) == str(error)
    assert _state() == before


UNKNOWN_QUEUE = (
    "the queue {slug!r} does not exist; name an existing queue, or have an admin create it "
    "first (Queues, or the admin): a request sent to a queue nobody reviews would wait unseen"
)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("changes", "missing"),
    [
        ({"queue": "no-such-queue"}, [("queue", "no-such-queue")]),
        (
            {"tool_queues": {"issue_refund": "refunds-seniro", "cancel_order": "refunds"}},
            [("tool_queues.issue_refund", "refunds-seniro")],
        ),
        (
            {"rules": [{**BAD_RULE, "name": "big", "queue": "refunds-seniro"}]},
            [("rules[1].queue", "refunds-seniro")],
        ),
        ({"escalation_queue": "no-such-queue"}, [("escalation_queue", "no-such-queue")]),
        (
            {"queue": "no-such-queue", "escalation_queue": "refunds-seniro"},
            [("queue", "no-such-queue"), ("escalation_queue", "refunds-seniro")],
        ),
    ],
)
def test_a_configuration_naming_a_queue_that_does_not_exist_is_refused_with_nothing_saved(
    operator: Any, changes: dict[str, Any], missing: list[tuple[str, str]]
) -> None:
    """Invariant 10: a request sent to a queue nobody reviews would wait unseen until its
    SLA decided it; the version naming one is refused, field and slug named."""
    services.config_active(agent_name=AGENT)
    before = _state()

    with pytest.raises(ConfigRefused) as refused:
        configuration.config_version_create(
            agent_name=AGENT, config=_config(**changes), note="typo", user=operator
        )

    assert refused.value.errors == tuple(
        ConfigError(where, UNKNOWN_QUEUE.format(slug=slug)) for where, slug in missing
    )
    assert _state() == before
    assert Queue.objects.filter(slug__in=["no-such-queue", "refunds-seniro"]).count() == 0


@pytest.mark.django_db
def test_a_configuration_that_is_not_an_object_is_refused(operator: Any) -> None:
    services.config_active(agent_name=AGENT)
    before = _state()

    with pytest.raises(ConfigRefused, match="a configuration must be an object"):
        configuration.config_version_create(agent_name=AGENT, config=["x"], note="", user=operator)

    assert _state() == before


# --- limits, model tiers, escalation and SLA ------------------------------------------------


@pytest.mark.django_db
def test_limits_tiers_escalation_and_sla_are_versioned_diffed_and_rolled_back(
    operator: Any,
) -> None:
    v1 = services.config_active(agent_name=AGENT)
    proposed = _config(
        limits={**CODE_RUNTIME["limits"], "max_steps": 12, "max_cost_usd": "0.500"},
        model_tiers={
            **CODE_RUNTIME["model_tiers"],
            "decision": [_route("gpt-4.1"), _route("gpt-4o", "backup")],
        },
        escalation_queue="support-leads",
        sla_minutes=15,
    )

    v2 = configuration.config_version_create(
        agent_name=AGENT, config=proposed, note="A stronger decision model", user=operator
    )

    # Stored canonical: "0.500" and "0.5" are one amount.
    assert v2.config == {**proposed, "limits": {**proposed["limits"], "max_cost_usd": "0.5"}}
    assert v2.policy_version == v1.policy_version  # the policy itself did not change
    assert configuration.config_diff(a=v1, b=v2).summary == [
        ("limits.max_cost_usd", '"0.25"', '"0.5"'),
        ("limits.max_steps", "40", "12"),
        (
            "model_tiers.decision",
            "gpt-4o@default, gpt-4o-mini@default",
            "gpt-4.1@default, gpt-4o@backup",
        ),
        ("escalation_queue", '"support"', '"support-leads"'),
        ("sla_minutes", "null", "15"),
    ]
    created = _config_events("config.version_created")[-1][1]
    assert created["config"]["model_tiers"]["decision"] == [
        {"model": "gpt-4.1", "endpoint": "default"},
        {"model": "gpt-4o", "endpoint": "backup"},
    ]

    services.release_activate_config(agent_name=AGENT, number=2, user=operator)
    assert services.config_active(agent_name=AGENT) == v2
    services.release_activate_config(agent_name=AGENT, number=1, user=operator)  # roll back
    assert services.config_active(agent_name=AGENT) == v1
    assert AgentConfigVersion.objects.count() == 2


@pytest.mark.django_db
def test_endpoint_urls_and_keys_are_never_stored(operator: Any) -> None:
    services.config_active(agent_name=AGENT)
    configuration.config_version_create(
        agent_name=AGENT,
        config=_config(
            model_tiers={**CODE_RUNTIME["model_tiers"], "routing": [_route("x", "backup")]}
        ),
        note="backup",
        user=operator,
    )

    stored = json.dumps(list(AgentConfigVersion.objects.values_list("config", flat=True)))
    logged = json.dumps(list(AuditEvent.objects.values_list("after", flat=True)))
    for secret in ("127.0.0.1:9", "sk-default-secret", "sk-backup-secret"):
        assert secret not in stored
        assert secret not in logged


@pytest.mark.django_db
def test_a_section_left_out_takes_the_code_declaration(operator: Any) -> None:
    services.config_active(agent_name=AGENT)
    config = _config(thresholds={"issue_refund": 0.5}, limits={"max_steps": 9})
    for field in ("model_tiers", "escalation_queue", "sla_minutes"):
        del config[field]

    version = configuration.config_version_create(
        agent_name=AGENT, config=config, note="partial", user=operator
    )

    assert version.config == _config(
        thresholds={"issue_refund": 0.5}, limits={**CODE_RUNTIME["limits"], "max_steps": 9}
    )


@pytest.mark.django_db
def test_a_version_stored_before_these_sections_existed_follows_the_code(operator: Any) -> None:
    """Rows saved before limits and tiers were part of a version hold only the policy."""
    legacy = services.config_active(agent_name=AGENT)
    policy = replace(SUPPORT_POLICY, queue="frontline")
    AgentConfigVersion.objects.filter(pk=legacy.pk).update(
        config=config_from_policy(policy=policy), policy_version=policy.version
    )
    legacy.refresh_from_db()
    run = Run.objects.create(
        agent_name=AGENT,
        config_version=legacy,
        input={},
        trace_id="t",
        prompt_version="p",
        model="m",
        request_hash="h",
    )
    before = _state()

    config = configuration.config_for_run(run=run, agent=agent_get(AGENT))

    assert config.limits == agent_get(AGENT).limits
    assert config.tiers == agent_get(AGENT).declared_tiers
    assert (config.escalation_queue, config.sla_minutes) == ("frontline", None)
    assert configuration.config_effective(version=legacy) == _config(
        queue="frontline", escalation_queue="frontline"
    )
    # Spelling out what the old row means is no change.
    with pytest.raises(ConfigRefused, match="Version 1 has exactly this configuration already"):
        configuration.config_version_create(
            agent_name=AGENT,
            config=_config(queue="frontline", escalation_queue="frontline"),
            note="no change",
            user=operator,
        )
    assert _state() == before


ONE = [_route("gpt-4o")]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"model_tiers": {**CODE_RUNTIME["model_tiers"], "decision": [_route("gpt-4o", "lab")]}},
            "model_tiers.decision[1].endpoint: the endpoint 'lab' is not configured; the "
            "configured endpoint aliases are ['backup', 'default']",
        ),
        (
            {"model_tiers": {**CODE_RUNTIME["model_tiers"], "decision": []}},
            "model_tiers.decision: has no models: a task kind needs at least one",
        ),
        (
            {"model_tiers": {"routing": ONE, "decision": ONE}},
            "model_tiers.drafting: has no models: a task kind needs at least one",
        ),
        (
            {"model_tiers": {**CODE_RUNTIME["model_tiers"], "poetry": ONE}},
            "model_tiers.poetry: the agent has no task kind 'poetry'; its task kinds are "
            "['routing', 'decision', 'drafting']",
        ),
        (
            {"model_tiers": {**CODE_RUNTIME["model_tiers"], "routing": [_route("")]}},
            "model_tiers.routing[1].model: must be a name of 1 to 100 characters without "
            "spaces or commas, not ''",
        ),
        (
            {"model_tiers": {**CODE_RUNTIME["model_tiers"], "routing": [*ONE, _route("a b")]}},
            "model_tiers.routing[2].model: must be a name of 1 to 100 characters without "
            "spaces or commas, not 'a b'",
        ),
        (
            {"model_tiers": {**CODE_RUNTIME["model_tiers"], "routing": [*ONE, *ONE]}},
            "model_tiers.routing: lists gpt-4o@default twice",
        ),
        (
            {
                "model_tiers": {
                    **CODE_RUNTIME["model_tiers"],
                    "routing": [{**ONE[0], "api_key": "sk-x"}],
                }
            },
            "model_tiers.routing[1].api_key: is not a field here; the fields are model, endpoint",
        ),
        (
            {"model_tiers": ["gpt-4o"]},
            "model_tiers: must be an object of each task kind and a list of models, not ['gpt-4o']",
        ),
        (
            {"limits": {"max_steps": 0}},
            "limits.max_steps: must be a whole number greater than 0 (at most 1000000000), not 0",
        ),
        (
            {"limits": {"deadline_s": -5}},
            "limits.deadline_s: must be a whole number greater than 0 (at most 1000000000), not -5",
        ),
        (
            {"limits": {"max_tokens": "500"}},
            "limits.max_tokens: must be a whole number greater than 0 (at most 1000000000), "
            "not '500'",
        ),
        (
            {"limits": {"max_cost_usd": "ten"}},
            "limits.max_cost_usd: must be an amount in USD greater than 0, as a decimal string "
            "such as \"0.25\", not 'ten'",
        ),
        (
            {"limits": {"max_cost_usd": "0"}},
            "limits.max_cost_usd: must be an amount in USD greater than 0, as a decimal string "
            "such as \"0.25\", not '0'",
        ),
        (
            {"limits": {"max_cost_usd": 0.25}},
            "limits.max_cost_usd: must be an amount in USD greater than 0, as a decimal string "
            'such as "0.25", not 0.25',
        ),
        (
            {"limits": {"on_exceeded": "retry"}},
            "limits.on_exceeded: must be one of ['escalate', 'fail'], not 'retry'",
        ),
        (
            {"limits": {"max_retries": 3}},
            "limits.max_retries: is not a field here; the fields are max_steps, max_tool_calls, "
            "max_tokens, max_cost_usd, deadline_s, on_exceeded",
        ),
        (
            {"limits": 3},
            "limits: must be an object with the fields max_steps, max_tool_calls, max_tokens, "
            "max_cost_usd, deadline_s, on_exceeded",
        ),
        (
            {"sla_minutes": 0},
            "sla_minutes: must be a whole number of minutes from 1 to 525600, or null for the "
            "queue's own SLA, not 0",
        ),
        (
            {"escalation_queue": "Team leads"},
            f"escalation_queue: {SLUG} 'Team leads'",
        ),
        (
            {"temperature": 0.2},
            "temperature: is not a field here; the fields are scope, review_risks, thresholds, "
            "rules, queue, tool_queues, on_foreign_subject, sums_window_hours, limits, "
            "model_tiers, escalation_queue, sla_minutes",
        ),
        (
            {"thresholds": {"issue_refund": 1.5}},
            "thresholds.issue_refund: must be a number between 0 and 1, not 1.5",
        ),
    ],
)
def test_an_invalid_section_is_refused_with_its_message_and_nothing_is_saved(
    operator: Any, changes: dict[str, Any], message: str
) -> None:
    services.config_active(agent_name=AGENT)
    before = _state()

    with pytest.raises(ConfigRefused) as refused:
        configuration.config_version_create(
            agent_name=AGENT, config=_config(**changes), note="bad", user=operator
        )

    assert str(refused.value) == message
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
    services.release_activate_config(agent_name=AGENT, number=2, user=operator)

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
    services.config_active(agent_name=AGENT)
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
            services.release_activate_config(agent_name=AGENT, number=number, user=operator)
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
    assert ReleaseLabel.objects.filter(agent_name=AGENT, label="production").count() == 1
    events = _production_moves()[1:]  # after the bootstrap's
    assert sorted(after["config"] for _, after, _ in events) == numbers
    assert [after["kind"] for _, after, _ in events] == ["activation"] * 4
    # Each activation saw the one before it: the chain of before → after is unbroken.
    assert (events[0][0]["number"], events[0][0]["config"]) == (1, 1)
    for (_, previous, _), (before, _, _) in itertools.pairwise(events):
        assert (before["number"], before["config"]) == (previous["number"], previous["config"])
    assert Release.objects.filter(agent_name=AGENT).count() == 5  # one per configuration
    active = services.config_active(agent_name=AGENT)
    assert active.number == events[-1][1]["config"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_uses_store_one_version_1() -> None:
    barrier = threading.Barrier(4)
    numbers: list[int] = []

    def first_use() -> None:
        try:
            barrier.wait()
            numbers.append(services.config_active(agent_name=AGENT).number)
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
    assert Release.objects.filter(agent_name=AGENT).count() == 1
    moved = AuditEvent.objects.filter(verb="release.label_moved", object_id=AGENT)
    assert sorted(moved.values_list("after__label", "after__kind")) == [
        ("dev", "initial"),
        ("production", "initial"),
        ("staging", "initial"),
    ]
