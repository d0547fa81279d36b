"""Agent configuration as immutable versions: validate, create, read, diff.

An agent's operator-editable configuration is declared in code as a starting point; from
the first use on, the database holds it as numbered, immutable ``AgentConfigVersion``
rows. Which one runs is not decided here: a release pins one configuration version with
one prompt version, and the ``production`` label's release is what new runs use
(``releases.services``). A version holds:

- the policy (``policy.engine``): scope, per-tool thresholds, review rules and
  two-person rules, the default and per-tool review queues;
- ``limits``: the run's step, tool-call, token, cost and time budget, and whether a run
  that reaches one fails or waits for a person;
- ``model_tiers``: per task kind of the agent, a model at an endpoint alias, then its
  fallbacks in order. Aliases only: URLs and keys stay in the environment;
- ``escalation_queue``: where a run that needs a person waits;
- ``sla_minutes``: the due time of the agent's requests (null: each queue's own SLA).

1. ``config_version_create`` validates a whole configuration (every rule parses, every
   tool exists, thresholds in 0..1, approvals >= 1, every queue it names exists, limits
   > 0, every task kind has models at configured endpoints) and stores it as the next
   number. Nothing is saved when anything is wrong, nor when a version with the same
   effective configuration exists already.
2. Each run records the version of its release and runs under it to its end
   (``config_for_run``): its policy, limits, models and escalation; a later move of a
   label changes only new runs. A version stored before a section existed takes that
   section from the agent's code.

Every new version writes its audit event (``config.version_created``, object
``agent_config:<agent>``) in the same transaction.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from agents.definition import Agent
from agents.registry import agent_get
from audit.log import audit_record
from audit.models import AuditVerb
from policy.engine import Policy, PolicyInvalid
from releases.config_documents import (
    CONFIG_FIELDS,
    ConfigRefused,
    RunConfig,
    policy_document,
    run_config_checked,
    run_config_stored,
)
from releases.models import AgentConfigVersion
from releases.versioning import version_first, version_get, version_next_number, versions_of

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from runs.models import Run

AUDIT_OBJECT = "agent_config"


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
        "on_foreign_subject": policy.on_foreign_subject,
        "sums_window_hours": policy.sums_window_hours,
    }


def _policy_from_config(config: Any) -> Policy:
    """Build a Policy from stored JSON; PolicyInvalid (every error, readable) on junk."""
    return policy_document(config).policy()


# --- JSON <-> limits, model tiers, escalation ---------------------------------------------------
#
# The document's shape and its checks are pydantic models (releases.config_documents);
# RunConfig, what a version decides about a run, lives there too.


def _run_config(
    config: Any, agent: Agent, *, strict: bool, policy: Policy | None = None
) -> RunConfig:
    """A version's JSON as a RunConfig.

    ``strict`` (a new version): ConfigRefused carrying every error at once, the queues
    that do not exist included. Otherwise (a stored version) PolicyInvalid on junk. A
    section left out (a version stored before it existed) is the agent's code's: its
    limits and tiers, no SLA of its own, escalation to the version's review queue.
    """
    if strict:
        return run_config_checked(config, agent, queues_existing=_queues_existing)
    return run_config_stored(config, agent, policy=policy)


def _code_run_config(agent: Agent) -> RunConfig:
    return RunConfig(
        policy=agent.policy,
        limits=agent.limits,
        tiers=agent.declared_tiers,
        escalation_queue=agent.policy.queue,
        sla_minutes=None,
    )


def config_canonical(*, run_config: RunConfig) -> dict[str, Any]:
    """The JSON a version stores for ``run_config`` (canonical: hashing and diffs)."""
    limits = run_config.limits
    return {
        **config_from_policy(policy=run_config.policy),
        "limits": {
            "max_steps": limits.max_steps,
            "max_tool_calls": limits.max_tool_calls,
            "max_tokens": limits.max_tokens,
            # As a string: JSON numbers would turn 0.1 into a float.
            "max_cost_usd": format(limits.max_cost_usd.normalize(), "f"),
            "deadline_s": limits.deadline_s,
            "on_exceeded": str(limits.on_exceeded),
        },
        "model_tiers": {
            kind: [{"model": r.model, "endpoint": r.endpoint} for r in routes]
            for kind, routes in run_config.tiers.items()
        },
        "escalation_queue": run_config.escalation_queue,
        "sla_minutes": run_config.sla_minutes,
    }


_POLICIES: dict[str, Policy] = {}
_RUN_CONFIGS_BY_VERSION_ID: dict[int, RunConfig] = {}


def config_cache_clear() -> None:
    """Forget the built configurations of this process.

    Only for a database whose version table was dropped and created again (a migration
    taken back past it and forward, as the migration tests do): its ids start over, and a
    kept configuration would answer for another version.
    """
    _RUN_CONFIGS_BY_VERSION_ID.clear()


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


def config_effective(*, version: AgentConfigVersion) -> dict[str, Any]:
    """What a version means for runs, as JSON: its own, sections it lacks from the code.

    Pages show and diff this, so a version stored before limits or tiers were part of a
    version shows the code's, which are what its runs use.
    """
    agent = agent_get(version.agent_name)
    return config_canonical(run_config=config_of_version(version=version, agent=agent))


def config_for_run(*, run: Run, agent: Agent) -> RunConfig:
    """A run's own configuration, to its end: its version's, whatever activates later.

    Runs created before configuration versions existed follow the agent's code.
    """
    if run.config_version_id is None:
        return _code_run_config(agent)
    # Kept by the version's id (config_of_version), so no query on every step.
    built = _RUN_CONFIGS_BY_VERSION_ID.get(run.config_version_id)
    if built is None:
        version = AgentConfigVersion.objects.only("config", "policy_version").get(
            pk=run.config_version_id
        )
        built = config_of_version(version=version, agent=agent)
    return built


def config_of_version(*, version: AgentConfigVersion, agent: Agent) -> RunConfig:
    """What a stored version decides about runs; sections it lacks come from the code.

    Kept by the version's id: a version row never changes and PostgreSQL never hands its
    id to another row.
    """
    built = _RUN_CONFIGS_BY_VERSION_ID.get(version.pk)
    if built is None:
        built = _run_config(
            version.config, agent, strict=False, policy=config_policy(version=version)
        )
        if len(_RUN_CONFIGS_BY_VERSION_ID) < 1024:
            _RUN_CONFIGS_BY_VERSION_ID[version.pk] = built
    return built


def config_policy_for_run(*, run: Run, agent: Agent) -> Policy:
    """The policy that judges a run's calls: its own version's, to the end of the run."""
    return config_for_run(run=run, agent=agent).policy


# --- which queues exist --------------------------------------------------------------------------
#
# A version that names a queue nobody can open strands its requests where no one sees
# them, so every queue a version names must exist. Queues belong to the reviews app,
# which this module must not import (dependencies point from reviews to here): the app
# registers a lookup in its AppConfig.ready, the interface this module defines.

QueueLookup = Callable[[Collection[str]], Collection[str]]
_queue_lookup: list[QueueLookup] = []


def queue_lookup_register(lookup: QueueLookup) -> None:
    """Set the function that says which of some queue slugs exist (the reviews app's)."""
    _queue_lookup[:] = [lookup]


def queues_named(*, run_config: RunConfig) -> list[tuple[str, str]]:
    """Every queue a configuration names, as (field, slug), in the order a form shows them."""
    policy = run_config.policy
    named = [("queue", policy.queue)]
    named += [(f"tool_queues.{tool}", slug) for tool, slug in sorted(policy.tool_queues.items())]
    named += [(f"rules.{rule.name}.queue", rule.queue) for rule in policy.rules if rule.queue]
    named.append(("escalation_queue", run_config.escalation_queue))
    return named


def _queues_existing(slugs: Collection[str]) -> Collection[str]:
    """Which of ``slugs`` are queues, through the registered lookup (one query)."""
    if not _queue_lookup:
        raise ImproperlyConfigured(
            "no queue lookup is registered: the app that owns queues (reviews) must be "
            "installed, and call configuration.queue_lookup_register in its ready()"
        )
    return _queue_lookup[0](slugs)


def queues_missing(*, run_config: RunConfig) -> list[tuple[str, str]]:
    """The (field, slug) pairs whose queue does not exist."""
    named = queues_named(run_config=run_config)
    existing = set(_queues_existing({slug for _, slug in named}))
    return [(field, slug) for field, slug in named if slug not in existing]


def _refuse_missing_queues(run_config: RunConfig, *, what: str) -> None:
    missing = queues_missing(run_config=run_config)
    if missing:
        listed = "; ".join(f"{field} names {slug!r}" for field, slug in missing)
        raise ConfigRefused(
            f"{what} names queues that do not exist: {listed}. Name an existing queue, or "
            "have an admin create it first (Queues, or the admin): a request sent to a "
            "queue nobody reviews would wait unseen."
        )


# --- versions ----------------------------------------------------------------------------------


def _audit_created(version: AgentConfigVersion, user: User | None) -> None:
    audit_record(
        actor=user,
        verb=AuditVerb.CONFIG_VERSION_CREATED,
        object_type=AUDIT_OBJECT,
        object_id=version.agent_name,
        after={
            "number": version.number,
            "policy_version": version.policy_version,
            "note": version.note,
            "config": version.config,
        },
    )


def config_code_document(agent: Agent) -> dict[str, Any]:
    """The configuration the agent's code declares, as a version stores it."""
    return config_canonical(run_config=_code_run_config(agent))


def config_version_first(*, agent_name: str) -> AgentConfigVersion:
    """The agent's version 1; the first time, made from its code-declared configuration."""
    agent = agent_get(agent_name)
    return version_first(
        AgentConfigVersion,
        agent_name=agent_name,
        defaults=lambda: {
            "config": config_code_document(agent),
            "note": "Declared in code (the agent's configuration at first use).",
            "policy_version": agent.policy.version,
        },
        created=lambda version: _audit_created(version, None),
    )


def config_validate(*, agent_name: str, config: Any) -> tuple[dict[str, Any], RunConfig]:
    """The canonical form of a proposed configuration and what it means; ConfigRefused if bad.

    A section left out takes the agent's code declaration, so the stored version says
    everything its runs will use. The queues it names are checked with the rest of the
    document (one lookup, every error at once).
    """
    agent = agent_get(agent_name)
    try:
        run_config = _run_config(config, agent, strict=True)
        run_config.policy.validate_for({tool.name for tool in agent.tools})
    except PolicyInvalid as exc:
        raise ConfigRefused(str(exc)) from None
    return config_canonical(run_config=run_config), run_config


def config_queues_exist(*, version: AgentConfigVersion) -> None:
    """ConfigRefused if a queue the version names was deleted since it was saved."""
    _refuse_missing_queues(
        config_of_version(version=version, agent=agent_get(version.agent_name)),
        what=f"Configuration version {version.number}",
    )


@transaction.atomic
def config_version_create(
    *, agent_name: str, config: Any, note: str, user: User | None
) -> AgentConfigVersion:
    """Store a new version (no release uses it yet); ConfigRefused and nothing saved if bad.

    Numbers are handed out under the lock of the agent's version 1 row, so two operators
    saving at once get consecutive numbers rather than one error.
    """
    canonical, run_config = config_validate(agent_name=agent_name, config=config)
    number = version_next_number(
        AgentConfigVersion, first=config_version_first(agent_name=agent_name)
    )
    # Compared as runs would see them: a version stored before limits and tiers were part
    # of one is the same as a new one that spells out the code's values.
    for other in AgentConfigVersion.objects.filter(agent_name=agent_name).order_by("-number"):
        if canonical == config_effective(version=other):
            raise ConfigRefused(
                f"Version {other.number} has exactly this configuration already; nothing "
                "to save. To use it, make a release of it."
            )
    version = AgentConfigVersion.objects.create(
        agent_name=agent_name,
        number=number,
        config=canonical,
        note=note.strip()[:500],
        created_by=user,
        policy_version=run_config.policy.version,
    )
    _audit_created(version, user)
    return version


def config_versions(*, agent_name: str) -> list[AgentConfigVersion]:
    """An agent's versions, newest first, with who created them."""
    return versions_of(AgentConfigVersion, agent_name=agent_name)


def config_version_get(*, agent_name: str, number: int) -> AgentConfigVersion | None:
    return version_get(AgentConfigVersion, agent_name=agent_name, number=number)


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


def routes_text(routes: list[dict[str, str]]) -> str:
    """A tier as an operator writes it on the form: ``gpt-4o@default, gpt-4o-mini@default``."""
    return ", ".join(f"{route['model']}@{route['endpoint']}" for route in routes)


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
            shown = routes_text if field == "model_tiers" else _shown
            for key in sorted({*old, *new}):
                if old.get(key) != new.get(key):
                    rows.append(
                        (
                            f"{field}.{key}",
                            shown(old[key]) if key in old else "",
                            shown(new[key]) if key in new else "",
                        )
                    )
        else:
            rows.append((field, _shown(old), _shown(new)))
    return rows


def config_diff(*, a: AgentConfigVersion, b: AgentConfigVersion) -> ConfigDiff:
    """The change from version ``a`` to version ``b`` of the same agent, as runs see them."""
    a_config, b_config = config_effective(version=a), config_effective(version=b)
    old = json.dumps(a_config, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    new = json.dumps(b_config, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    lines: list[tuple[str, str]] = []
    for line in difflib.unified_diff(
        old, new, fromfile=f"version {a.number}", tofile=f"version {b.number}", lineterm="", n=3
    ):
        if line.startswith(("---", "+++")):
            continue
        kind = {"@": "hunk", "+": "add", "-": "del"}.get(line[:1], "ctx")
        lines.append((kind, line))
    return ConfigDiff(lines=lines, summary=_summary(a_config, b_config))
