"""Variants of the support agent with other policies, for the review tests.

Registered per test with ``review_agents_settings`` (in-process) and, for real workers,
through the ``AGENTDESK_AGENTS`` variable that ``REVIEW_TEST_AGENTS`` spells.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from agents import registry
from examples.support.agent import support_agent
from examples.support.review import SUPPORT_POLICY
from policy.engine import ReviewRule

ALL_TOOLS = frozenset(tool.name for tool in support_agent.tools)

# issue_refund is declared but outside the scope: every refund is blocked.
scoped = replace(
    support_agent,
    name="support_scoped",
    policy=replace(SUPPORT_POLICY, scope=ALL_TOOLS - {"issue_refund"}),
)

# Every refund over EUR 20 needs two people (the seeded teapot ticket T-0002 gets 52.80).
TWO_PERSON_RULE = ReviewRule(
    name="refund_two_person",
    when="args.amount > 20",
    tools=("issue_refund",),
    queue="refunds-senior",
    approvals=2,
)
two_person = replace(
    support_agent,
    name="support_two_person",
    policy=replace(SUPPORT_POLICY, rules=(TWO_PERSON_RULE,)),
)

# Every reply waits for a person: a low-risk (write) request that bulk approval accepts.
reply_reviewed = replace(
    support_agent,
    name="support_reply_reviewed",
    policy=replace(
        SUPPORT_POLICY,
        rules=(
            ReviewRule(name="every_reply", when="true", tools=("send_reply",), queue="replies"),
        ),
    ),
)


REVIEW_TEST_AGENTS = [
    "examples.support.agent.support_agent",
    *(f"tests.reviews.agents.{name}" for name in ("scoped", "two_person", "reply_reviewed")),
]


def review_agents_settings(settings: Any) -> None:
    """Register the variants in this process (pytest-django's ``settings`` undoes it)."""
    settings.AGENTDESK_AGENTS = REVIEW_TEST_AGENTS
    registry.agents.cache_clear()
