"""Configuration documents (pydantic models): every error at once, and no hash changes."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest

from agents.definition import Risk
from agents.registry import agent_get
from audit.models import AuditEvent
from examples.support.review import SUPPORT_POLICY
from policy.engine import Policy, PolicyInvalid, ReviewRule, Verdict, policy_evaluate
from releases import configuration, services
from releases.config_documents import (
    CONFIG_FIELDS,
    LIMIT_FIELDS,
    ROUTE_FIELDS,
    RULE_FIELDS,
    RULE_VARIABLES,
    ConfigDocument,
    ConfigError,
    ConfigRefused,
    LimitsDoc,
    RouteDoc,
    RuleDoc,
    cel_variables,
    document_validate,
)
from releases.models import AgentConfigVersion, ReleaseLabel
from reviews.models import Queue

AGENT = "support"
# The example agent's code configuration as version 1 stores it, hashed before the
# pydantic models replaced the hand-written checks: reading it through them changes
# neither this nor the policy's version, so existing versions and runs keep theirs.
SUPPORT_CONFIG_SHA256 = "581cd8efedee5a45e6e53d554aa1cdfa320cd3cf49382f10bf5f185f8e208e30"
SUPPORT_POLICY_VERSION = "pol-a776b21808f8"


@pytest.fixture(autouse=True)
def endpoints(settings: Any) -> None:
    settings.AGENTDESK_LLM_ENDPOINTS = {
        "default": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-default-secret"}
    }


def _code_config() -> dict[str, Any]:
    agent = agent_get(AGENT)
    return configuration.config_canonical(run_config=configuration._code_run_config(agent))


def _sha256(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _state() -> tuple[list[tuple[int, str]], int | None, int]:
    production = ReleaseLabel.objects.filter(agent_name=AGENT, label="production").first()
    return (
        list(AgentConfigVersion.objects.order_by("number").values_list("number", "policy_version")),
        production.release.config_version.number if production else None,
        AuditEvent.objects.count(),
    )


# --- round trip ------------------------------------------------------------------------------


def test_the_example_configuration_round_trips_with_its_hashes_unchanged() -> None:
    config = _code_config()
    agent = agent_get(AGENT)

    document = document_validate(copy.deepcopy(config), strict=True, agent=agent)
    run_config = document.run_config(agent)

    assert configuration.config_canonical(run_config=run_config) == config
    assert _sha256(config) == SUPPORT_CONFIG_SHA256
    assert run_config.policy == SUPPORT_POLICY
    assert run_config.policy.version == SUPPORT_POLICY_VERSION
    # Read leniently, as a stored version is, it is the same.
    stored = configuration._run_config(config, agent, strict=False)
    assert configuration.config_canonical(run_config=stored) == config


@pytest.mark.django_db
def test_a_stored_version_reads_back_as_it_was_stored(support_queues: None) -> None:
    version = services.config_active(agent_name=AGENT)

    assert _sha256(version.config) == SUPPORT_CONFIG_SHA256
    assert version.policy_version == SUPPORT_POLICY_VERSION
    assert configuration.config_effective(version=version) == version.config
    assert configuration.config_policy(version=version).version == SUPPORT_POLICY_VERSION


def test_the_models_declare_the_documents_fields_in_order() -> None:
    assert tuple(ConfigDocument.model_fields) == CONFIG_FIELDS
    assert tuple(RuleDoc.model_fields) == RULE_FIELDS
    assert tuple(LimitsDoc.model_fields) == LIMIT_FIELDS
    assert tuple(RouteDoc.model_fields) == ROUTE_FIELDS


def test_a_stored_document_that_is_junk_is_policy_invalid_with_every_error() -> None:
    with pytest.raises(PolicyInvalid) as invalid:
        configuration.config_policy(
            version=AgentConfigVersion(
                agent_name=AGENT, config={"queue": "a b", "rules": [{"name": "r", "when": ">"}]}
            )
        )

    lines = str(invalid.value).splitlines()
    assert lines[0].startswith("rules[1].when: the rule '>' does not parse: ")
    assert lines[-1] == (
        "queue: must be a queue slug (letters, digits, hyphens, underscores), not 'a b'"
    )


# --- every error at once ---------------------------------------------------------------------


@pytest.mark.django_db
def test_three_errors_in_three_places_are_refused_together_and_nothing_is_saved(
    operator: Any, support_queues: None
) -> None:
    """A field, a rule's CEL and an endpoint: one refusal carries all three, each named."""
    services.config_active(agent_name=AGENT)
    config = _code_config()
    config["sums_window_hours"] = 0
    config["rules"][1]["when"] = "sums.record.total > 100 &&"
    config["model_tiers"]["drafting"][1]["endpoint"] = "lab"
    before = _state()

    with pytest.raises(ConfigRefused) as refused:
        configuration.config_version_create(
            agent_name=AGENT, config=config, note="three mistakes", user=operator
        )

    # In the document's order: rules come before sums_window_hours, then the runtime's.
    rule, field, endpoint = refused.value.errors
    assert field == ConfigError(
        "sums_window_hours", "must be a whole number of hours from 1 to 43920, not 0"
    )
    assert rule.location == "rules[2].when"
    assert rule.message.startswith("the rule 'sums.record.total > 100 &&' does not parse: ")
    assert endpoint == ConfigError(
        "model_tiers.drafting[2].endpoint",
        "the endpoint 'lab' is not configured; the configured endpoint aliases are ['default']",
    )
    assert str(refused.value).split("\n", 1)[0].startswith("rules[2].when: the rule ")
    assert str(endpoint).startswith("model_tiers.drafting[2].endpoint: the endpoint 'lab'")
    assert _state() == before


@pytest.mark.django_db
def test_a_missing_queue_is_reported_beside_the_other_errors(
    operator: Any, support_queues: None
) -> None:
    """The queues are looked up even when other fields are wrong."""
    services.config_active(agent_name=AGENT)
    config = _code_config()
    config["limits"]["max_steps"] = "40"
    config["escalation_queue"] = "team-leeds"
    before = _state()

    with pytest.raises(ConfigRefused) as refused:
        configuration.config_version_create(
            agent_name=AGENT, config=config, note="two", user=operator
        )

    assert [error.location for error in refused.value.errors] == [
        "limits.max_steps",
        "escalation_queue",
    ]
    assert refused.value.errors[1].message.startswith("the queue 'team-leeds' does not exist")
    assert _state() == before
    assert not Queue.objects.filter(slug="team-leeds").exists()


def test_an_error_names_nothing_but_the_endpoint_aliases() -> None:
    """Invariant 8: the endpoint's URL and key never appear in a refusal."""
    config = _code_config()
    config["model_tiers"]["routing"] = [{"model": "m", "endpoint": "sk-default-secret"}]

    with pytest.raises(ConfigRefused) as refused:
        document_validate(config, strict=True, agent=agent_get(AGENT))

    assert "127.0.0.1" not in str(refused.value)
    assert str(refused.value).endswith("the configured endpoint aliases are ['default']")


# --- a rule's variables ----------------------------------------------------------------------


def test_a_rule_may_read_every_variable_the_policy_gives_it_and_no_other() -> None:
    """RULE_VARIABLES is what policy_evaluate binds: each evaluates, a misspelling does not."""

    def verdict(when: str) -> str:
        policy = Policy(rules=(ReviewRule(name="r", when=when),), review_risks=frozenset())
        decision = policy_evaluate(
            policy=policy,
            tool_name="lookup_order",
            risk=Risk.READ,
            arguments={},
            confidence=0.9,
            run_input={},
        )
        return decision.reason if decision.verdict == Verdict.REVIEW else str(decision.verdict)

    for name in RULE_VARIABLES:
        assert verdict(f"{name} == {name}") == f"rule r: {name} == {name}"
    assert "could not be evaluated" in verdict("ammount == ammount")


def test_a_macro_s_own_variable_is_not_an_unknown_one() -> None:
    assert cel_variables("args.lines.all(l, l.qty < 5) && type(amount) == double") == {
        "args",
        "amount",
        "double",
    }
    config = _code_config()
    config["rules"][0]["when"] = "args.lines.exists(l, l.sku == 'x') && amount > 1"
    document_validate(config, strict=True, agent=agent_get(AGENT))  # no error
