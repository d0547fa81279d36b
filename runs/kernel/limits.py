"""A run's limits: what it has spent, and the first limit a next step would pass.

Checked before every step (runs.services) and before every read-only tool call a model
step makes at once (runs.kernel.tool_step.read_calls_inline), so that a run stops exactly where
one more step would go over, whichever way its steps are taken.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from agentdesk.errors import ErrorClass, error_payload
from agents.definition import Limits
from runs.models import Run


@dataclass(frozen=True)
class Spent:
    """What a run has used since its budget base, and when that base was."""

    steps: int
    tool_calls: int
    tokens: int
    cost_usd: Decimal
    since: datetime | None

    def plus(
        self, *, steps: int = 0, tool_calls: int = 0, tokens: int = 0, cost_usd: Any = 0
    ) -> Spent:
        return replace(
            self,
            steps=self.steps + steps,
            tool_calls=self.tool_calls + tool_calls,
            tokens=self.tokens + tokens,
            cost_usd=self.cost_usd + Decimal(cost_usd or 0),
        )


def run_spent(run: Run) -> Spent:
    """Counted from the run's budget base: its start, or the moment a person resumed it
    after a limit stopped it (reviews.services), which gives it its limits anew."""
    base = run.checkpoint.get("budget_base") or {}
    return Spent(
        steps=run.next_seq - base.get("steps", 0),
        tool_calls=run.tool_calls - base.get("tool_calls", 0),
        tokens=run.tokens_in + run.tokens_out - base.get("tokens", 0),
        cost_usd=run.cost_usd - Decimal(base.get("cost_usd", "0")),
        since=datetime.fromisoformat(base["at"]) if "at" in base else run.started_at,
    )


def limit_reached(
    spent: Spent, limits: Limits, *, about_to_call_tool: bool
) -> dict[str, Any] | None:
    """The first limit the next step would pass, as a budget_exceeded error; None if none.

    ``limits`` are the run's configuration version's (to its end, whatever activates later).
    """
    reason: str | None = None
    if spent.steps >= limits.max_steps:
        reason = f"the run reached its limit of {limits.max_steps} steps"
    elif about_to_call_tool and spent.tool_calls >= limits.max_tool_calls:
        reason = f"the run reached its limit of {limits.max_tool_calls} tool calls"
    elif spent.tokens >= limits.max_tokens:
        reason = f"the run used {spent.tokens} tokens of {limits.max_tokens}"
    elif spent.cost_usd >= limits.max_cost_usd:
        reason = f"the run cost ${spent.cost_usd} of its ${limits.max_cost_usd} budget"
    elif spent.since and timezone.now() - spent.since > timedelta(seconds=limits.deadline_s):
        reason = f"the run passed its deadline of {limits.deadline_s} s"
    return error_payload(ErrorClass.BUDGET_EXCEEDED, reason) if reason else None
