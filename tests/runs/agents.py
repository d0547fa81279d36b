"""Variants of the example agent for runtime tests, registered per test by ``use_agents``."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from agents.definition import (
    Idempotency,
    Limits,
    OnLimit,
    Risk,
    RuleContext,
    RuleReply,
    Tool,
    ToolContext,
)
from examples.support.agent import support_agent as reviewed_support_agent

# The runtime tests exercise the step loop, retries, fallbacks and limits; they register
# the example agent under its own name with a policy that reviews nothing, so a refund
# runs without waiting for a person. The policy and the approval flow are tested with
# the real policy in tests/reviews and tests/agentdesk/test_policy.py.
UNREVIEWED = replace(
    reviewed_support_agent.policy, review_risks=frozenset(), thresholds={}, rules=()
)
support_agent = replace(reviewed_support_agent, policy=UNREVIEWED)

# No rule-based fallback and no human: an exhausted chain dead-letters the run.
bare = replace(support_agent, name="bare", rule_fallback=None, escalate_to_human=False)
# No rule-based fallback: an exhausted chain waits for a human.
humane = replace(support_agent, name="humane", rule_fallback=None, escalate_to_human=True)


def _broken_rule(context: RuleContext) -> RuleReply:
    raise RuntimeError("the rule-based fallback has a bug")


# One verifier refusal and a person gets the run (the example allows the model a second try).
strict = replace(support_agent, name="strict", verification_attempts=1)


# A bug inside the runtime's own path (here the rule fallback) dead-letters the run.
buggy = replace(support_agent, name="buggy", rule_fallback=_broken_rule)


def limited(name: str, on_exceeded: OnLimit = OnLimit.FAIL, **limits: Any) -> Any:
    base = {
        "max_steps": 24,
        "max_tool_calls": 10,
        "max_tokens": 60_000,
        "max_cost_usd": Decimal("0.25"),
        "deadline_s": 600,
    }
    return replace(
        support_agent, name=name, limits=Limits(**{**base, **limits}, on_exceeded=on_exceeded)
    )


tight_steps = limited("tight_steps", max_steps=3)
tight_tools = limited("tight_tools", max_tool_calls=1)
tight_tokens = limited("tight_tokens", max_tokens=3000)
tight_cost = limited("tight_cost", max_cost_usd=Decimal("0.0004"))
tight_deadline = limited("tight_deadline", deadline_s=0)
tight_escalating = limited("tight_escalating", OnLimit.ESCALATE, max_steps=3)


class _LookupArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: str


SLOW_CALLS: list[str] = []


def _slow_lookup(args: _LookupArgs, ctx: ToolContext) -> dict[str, Any]:
    SLOW_CALLS.append(ctx.idempotency_key)
    time.sleep(1.0)
    return {"order_id": args.order_id}


_slow_tool = Tool(
    name="lookup_order",
    description="Look up an order (slowly).",
    func=_slow_lookup,
    input_schema=_LookupArgs,
    risk=Risk.READ,
    idempotency=Idempotency.SAFE,
    timeout_s=0.2,
)
slow = replace(
    support_agent,
    name="slow",
    tools=(_slow_tool, *[t for t in support_agent.tools if t.name != "lookup_order"]),
)

_limited_lookup = replace(support_agent.tool("lookup_order"), rate_limit="1/minute")
rate_limited = replace(
    support_agent,
    name="rate_limited",
    tools=(_limited_lookup, *[t for t in support_agent.tools if t.name != "lookup_order"]),
)


# A lookup that fails while a flag file exists: a tool outage the test switches on and off
# for every worker process at once.
FLAKY_FLAG_ENV = "AGENTDESK_TEST_FLAKY_FLAG"


def _flaky_lookup(args: Any, ctx: ToolContext) -> dict[str, Any]:
    flag = os.environ.get(FLAKY_FLAG_ENV, "")
    if flag and os.path.exists(flag):
        raise ConnectionError("the order database is unreachable")
    lookup = support_agent.tool("lookup_order")
    assert lookup is not None
    return dict(lookup.func(args, ctx))


flaky = replace(
    support_agent,
    name="flaky",
    tools=(
        replace(support_agent.tool("lookup_order"), func=_flaky_lookup),
        *[t for t in support_agent.tools if t.name != "lookup_order"],
    ),
)
