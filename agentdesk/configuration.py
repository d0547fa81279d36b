"""Agent configuration as immutable versions: create, activate, roll back, diff.

An agent's policy (scope, per-tool thresholds, review rules and two-person rules, the
default and per-tool queues) is declared in code as a starting point; from the first
run on, the database holds it as numbered, immutable ``AgentConfigVersion`` rows, one of
them active (``AgentConfigActive``). Operators change it without a deploy:

1. ``config_version_create`` validates a whole configuration (every rule parses, every
   tool exists, thresholds in 0..1, approvals >= 1, queues are slugs) and stores it as
   the next number. Nothing is saved when anything is wrong, nor when it equals the
   active version.
2. ``config_activate`` points the agent at a version: a newer one, or any earlier one
   (a rollback is an activation of an earlier number).
3. Each run records the version active when it was created and is judged by it to its
   end (``config_policy_for_run``); a newer activation changes only new runs.

Every change writes its audit event (``config.version_created``, ``config.activated``,
object ``agent_config:<agent>``) in the same transaction.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, transaction

from agentdesk.agents import Agent, Risk
from agentdesk.audit import audit_record
from agentdesk.models import AgentConfigActive, AgentConfigVersion
from agentdesk.policy import Policy, PolicyInvalid, ReviewRule
from agentdesk.registry import agent_get

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from runs.models import Run

AUDIT_OBJECT = "agent_config"
CONFIG_FIELDS = ("scope", "review_risks", "thresholds", "rules", "queue", "tool_queues")
RULE_FIELDS = ("name", "when", "tools", "queue", "approvals", "description")


class ConfigRefused(ValueError):
    """A configuration change that cannot be made; the message says why, for a person."""


# --- JSON <-> Policy ---------------------------------------------------------------------------


def config_from_policy(*, policy: Policy) -> dict[str, Any]:
    """A policy as the JSON a version stores (canonical: sorted where order means nothing)."""
    return {
        "scope": sorted(policy.scope) if policy.scope is not None else None,
        "review_risks": sorted(str(risk) for risk in policy.review_risks),
        "thresholds": {tool: float(t) for tool, t in sorted(policy.thresholds.items())},
        # Order matters here: the first matching rule names the queue.
        "rules": [
            {
                "name": rule.name,
                "when": rule.when,
                "tools": list(rule.tools),
                "queue": rule.queue,
                "approvals": rule.approvals,
                "description": rule.description,
            }
            for rule in policy.rules
        ],
        "queue": policy.queue,
        "tool_queues": dict(sorted(policy.tool_queues.items())),
    }


def _slug(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise PolicyInvalid(f"{what} must be a queue slug, not {value!r}")
    try:
        validate_slug(value)
    except ValidationError:
        raise PolicyInvalid(
            f"{what} {value!r} is not a slug (letters, digits, hyphens, underscores)"
        ) from None
    return value


def _names(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyInvalid(f"{what} must be a list of tool names")
    return tuple(value)


def _rule(raw: Any, index: int) -> ReviewRule:
    if not isinstance(raw, Mapping):
        raise PolicyInvalid(f"rule {index + 1} must be an object")
    unknown = sorted(set(raw) - set(RULE_FIELDS))
    if unknown:
        raise PolicyInvalid(f"rule {index + 1} has unknown fields {unknown}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PolicyInvalid(f"rule {index + 1} needs a name")
    when = raw.get("when")
    if not isinstance(when, str):
        raise PolicyInvalid(f"rule {name!r} needs a CEL expression")
    approvals = raw.get("approvals", 1)
    if isinstance(approvals, bool) or not isinstance(approvals, int):
        raise PolicyInvalid(f"rule {name!r}: approvals must be a whole number")
    queue = raw.get("queue")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise PolicyInvalid(f"rule {name!r}: the description must be text")
    return ReviewRule(
        name=name.strip(),
        when=when,
        tools=_names(raw.get("tools", []), f"rule {name!r}: tools"),
        queue=_slug(queue, f"rule {name!r}: the queue") if queue else None,
        approvals=approvals,
        description=description,
    )


def _policy_from_config(config: Any) -> Policy:
    """Build a Policy from stored JSON; PolicyInvalid (with a readable message) on junk."""
    if not isinstance(config, Mapping):
        raise PolicyInvalid("a configuration must be an object")
    unknown = sorted(set(config) - set(CONFIG_FIELDS))
    if unknown:
        raise PolicyInvalid(f"unknown configuration fields {unknown}")
    scope = config.get("scope")
    risks = config.get("review_risks", [Risk.IRREVERSIBLE])
    known_risks = sorted(risk.value for risk in Risk)
    if not isinstance(risks, list) or not all(r in known_risks for r in risks):
        raise PolicyInvalid(f"review_risks must be a list of {known_risks}")
    thresholds = config.get("thresholds", {})
    if not isinstance(thresholds, Mapping):
        raise PolicyInvalid("thresholds must map tool names to numbers")
    for tool, threshold in thresholds.items():
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise PolicyInvalid(f"the threshold of {tool!r} must be a number between 0 and 1")
    rules = config.get("rules", [])
    if not isinstance(rules, list):
        raise PolicyInvalid("rules must be a list")
    tool_queues = config.get("tool_queues", {})
    if not isinstance(tool_queues, Mapping):
        raise PolicyInvalid("tool_queues must map tool names to queue slugs")
    return Policy(  # __post_init__: thresholds in range, unique names, rules parse
        scope=frozenset(_names(scope, "scope")) if scope is not None else None,
        review_risks=frozenset(Risk(r) for r in risks),
        thresholds={str(tool): float(t) for tool, t in thresholds.items()},
        rules=tuple(_rule(raw, i) for i, raw in enumerate(rules)),
        queue=_slug(config.get("queue"), "the default queue"),
        tool_queues={
            str(tool): _slug(slug, f"the queue of {tool!r}") for tool, slug in tool_queues.items()
        },
    )


_POLICIES: dict[str, Policy] = {}
_POLICIES_BY_VERSION_ID: dict[int, Policy] = {}


def config_policy(*, version: AgentConfigVersion) -> Policy:
    """The Policy a stored version holds; PolicyInvalid if its JSON is junk.

    Versions are immutable, so the built policy is kept per content hash for the process.
    """
    policy = _POLICIES.get(version.policy_version)
    if policy is None:
        policy = _policy_from_config(version.config)
        if len(_POLICIES) < 1024:
            _POLICIES[policy.version] = policy
    return policy


def config_policy_for_run(*, run: Run, agent: Agent) -> Policy:
    """The policy that judges a run's calls: its own version's, to the end of the run.

    Runs created before configuration versions existed fall back to the agent's code.
    """
    if run.config_version_id is None:
        return agent.policy
    # Kept by the version's id: a version row never changes and PostgreSQL never hands its
    # id to another row, so this saves a query on every tool step.
    policy = _POLICIES_BY_VERSION_ID.get(run.config_version_id)
    if policy is None:
        version = AgentConfigVersion.objects.only("config", "policy_version").get(
            pk=run.config_version_id
        )
        policy = config_policy(version=version)
        if len(_POLICIES_BY_VERSION_ID) < 1024:
            _POLICIES_BY_VERSION_ID[run.config_version_id] = policy
    return policy


# --- versions ----------------------------------------------------------------------------------


def _audit_created(version: AgentConfigVersion, user: User | None) -> None:
    audit_record(
        actor=user,
        verb="config.version_created",
        object_type=AUDIT_OBJECT,
        object_id=version.agent_name,
        after={
            "number": version.number,
            "policy_version": version.policy_version,
            "note": version.note,
            "config": version.config,
        },
    )


def config_active(*, agent_name: str) -> AgentConfigVersion:
    """The agent's active version; the first time, version 1 from its code-declared policy.

    The bootstrap is race-safe: the unique (agent, number) and unique agent pointer make
    a second process that raced this one find the first one's rows instead of its own.
    """
    active = (
        AgentConfigActive.objects.select_related("version").filter(agent_name=agent_name).first()
    )
    if active is not None:
        return active.version
    agent = agent_get(agent_name)
    config = config_from_policy(policy=agent.policy)
    with transaction.atomic():
        try:
            with transaction.atomic():  # a savepoint: the race's loser reads the winner's
                version, created = AgentConfigVersion.objects.get_or_create(
                    agent_name=agent_name,
                    number=1,
                    defaults={
                        "config": config,
                        "note": "Declared in code (the agent's policy at first use).",
                        "policy_version": agent.policy.version,
                    },
                )
                active, _ = AgentConfigActive.objects.get_or_create(
                    agent_name=agent_name, defaults={"version": version}
                )
        except IntegrityError:
            return (
                AgentConfigActive.objects.select_related("version")
                .get(agent_name=agent_name)
                .version
            )
        if created:
            _audit_created(version, None)
            audit_record(
                actor=None,
                verb="config.activated",
                object_type=AUDIT_OBJECT,
                object_id=agent_name,
                before={"active": None},
                after={"active": 1, "policy_version": version.policy_version},
            )
        return active.version


def config_validate(*, agent_name: str, config: Any) -> tuple[dict[str, Any], Policy]:
    """The canonical form of a proposed configuration and its policy; ConfigRefused if bad."""
    agent = agent_get(agent_name)
    try:
        policy = _policy_from_config(config)
        policy.validate_for({tool.name for tool in agent.tools})
    except PolicyInvalid as exc:
        raise ConfigRefused(str(exc)) from None
    return config_from_policy(policy=policy), policy


@transaction.atomic
def config_version_create(
    *, agent_name: str, config: Any, note: str, user: User | None
) -> AgentConfigVersion:
    """Store a new version (not yet active); ConfigRefused and nothing saved if invalid.

    Numbers are handed out under the agent's pointer row lock, so two operators saving at
    once get consecutive numbers rather than one error.
    """
    canonical, policy = config_validate(agent_name=agent_name, config=config)
    config_active(agent_name=agent_name)
    active = AgentConfigActive.objects.select_for_update().get(agent_name=agent_name)
    current = AgentConfigVersion.objects.get(pk=active.version_id)
    if policy.version == current.policy_version:
        raise ConfigRefused(
            f"This is the same configuration as the active version {current.number}; "
            "nothing to save."
        )
    last = AgentConfigVersion.objects.filter(agent_name=agent_name).order_by("-number").first()
    version = AgentConfigVersion.objects.create(
        agent_name=agent_name,
        number=(last.number if last else 0) + 1,
        config=canonical,
        note=note.strip()[:500],
        created_by=user,
        policy_version=policy.version,
    )
    _audit_created(version, user)
    return version


@transaction.atomic
def config_activate(*, agent_name: str, number: int, user: User | None) -> AgentConfigVersion:
    """Make version ``number`` the active one (newer, or earlier: a rollback).

    The pointer row is locked first, so concurrent activations take turns and each one's
    audit event records the version it really replaced.
    """
    config_active(agent_name=agent_name)
    active = AgentConfigActive.objects.select_for_update().get(agent_name=agent_name)
    target = AgentConfigVersion.objects.filter(agent_name=agent_name, number=number).first()
    if target is None:
        raise ConfigRefused(f"{agent_name} has no version {number}.")
    before = AgentConfigVersion.objects.get(pk=active.version_id)
    if before.pk == target.pk:
        raise ConfigRefused(f"Version {number} is already active.")
    active.version = target
    active.save(update_fields=["version", "changed_at"])
    audit_record(
        actor=user,
        verb="config.activated",
        object_type=AUDIT_OBJECT,
        object_id=agent_name,
        before={"active": before.number, "policy_version": before.policy_version},
        after={"active": target.number, "policy_version": target.policy_version},
    )
    return target


def config_versions(*, agent_name: str) -> list[AgentConfigVersion]:
    """An agent's versions, newest first, with who created them."""
    return list(
        AgentConfigVersion.objects.filter(agent_name=agent_name)
        .select_related("created_by")
        .order_by("-number")
    )


def config_version_get(*, agent_name: str, number: int) -> AgentConfigVersion | None:
    return (
        AgentConfigVersion.objects.filter(agent_name=agent_name, number=number)
        .select_related("created_by")
        .first()
    )


# --- diff --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigDiff:
    """What changed from ``a`` to ``b``: a line diff and a per-field summary."""

    lines: list[tuple[str, str]]  # (kind: "add" | "del" | "ctx" | "hunk", text)
    summary: list[tuple[str, str, str]]  # (field, before, after); "" where absent

    @property
    def changed(self) -> bool:
        return bool(self.summary)


def _shown(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _summary(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for field in CONFIG_FIELDS:
        old, new = a.get(field), b.get(field)
        if old == new:
            continue
        if field == "rules":
            old_rules = {r["name"]: r for r in old or []}
            new_rules = {r["name"]: r for r in new or []}
            rule_rows: list[tuple[str, str, str]] = []
            for name in [*old_rules, *(n for n in new_rules if n not in old_rules)]:
                before, after = old_rules.get(name), new_rules.get(name)
                if before != after:
                    rule_rows.append(
                        (
                            f"rules.{name}",
                            _shown(before) if before else "",
                            _shown(after) if after else "",
                        )
                    )
            if not rule_rows:  # the same rules in another order: which queue wins changes
                rule_rows.append(
                    ("rules (order)", _shown(list(old_rules)), _shown(list(new_rules)))
                )
            rows.extend(rule_rows)
        elif isinstance(old, Mapping) and isinstance(new, Mapping):
            for key in sorted({*old, *new}):
                if old.get(key) != new.get(key):
                    rows.append(
                        (
                            f"{field}.{key}",
                            _shown(old[key]) if key in old else "",
                            _shown(new[key]) if key in new else "",
                        )
                    )
        else:
            rows.append((field, _shown(old), _shown(new)))
    return rows


def config_diff(*, a: AgentConfigVersion, b: AgentConfigVersion) -> ConfigDiff:
    """The change from version ``a`` to version ``b`` of the same agent."""
    old = json.dumps(a.config, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    new = json.dumps(b.config, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    lines: list[tuple[str, str]] = []
    for line in difflib.unified_diff(
        old, new, fromfile=f"version {a.number}", tofile=f"version {b.number}", lineterm="", n=3
    ):
        if line.startswith(("---", "+++")):
            continue
        kind = {"@": "hunk", "+": "add", "-": "del"}.get(line[:1], "ctx")
        lines.append((kind, line))
    return ConfigDiff(lines=lines, summary=_summary(a.config, b.config))
