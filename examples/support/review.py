"""How the support agent's calls are reviewed: its policy and what a reviewer is shown.

The policy is code for now; the operator console makes it a versioned configuration.
Every refund and cancellation is irreversible and so waits for a person; refunds over
EUR 100 go to senior reviewers, and over EUR 250 two of them must agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentdesk.agents import ToolContext, ToolError
from agentdesk.policy import Policy, ReviewRule
from examples.support.tools import (
    LookupCustomerArgs,
    LookupOrderArgs,
    lookup_customer,
    lookup_order,
)

SUPPORT_POLICY = Policy(
    thresholds={"send_reply": 0.6, "issue_refund": 0.8, "cancel_order": 0.8},
    rules=(
        ReviewRule(
            name="refund_over_100",
            when="args.amount > 100",
            tools=("issue_refund",),
            queue="refunds-senior",
            description="Refunds over EUR 100 are checked by a senior reviewer.",
        ),
        ReviewRule(
            name="refund_over_250",
            when="args.amount > 250",
            tools=("issue_refund",),
            queue="refunds-senior",
            approvals=2,
            description="Refunds over EUR 250 need two senior reviewers.",
        ),
    ),
    queue="support",
    tool_queues={"issue_refund": "refunds", "cancel_order": "refunds"},
)


def support_review_context(
    tool: str, arguments: Mapping[str, Any], run_input: Mapping[str, Any]
) -> dict[str, Any]:
    """The order a call touches and its customer's orders and refund history."""
    context = ToolContext(run_id="", trace_id="", idempotency_key="", input=run_input)
    records: dict[str, Any] = {}
    order_id = arguments.get("order_id")
    email = run_input.get("customer_email")
    if isinstance(order_id, str):
        try:
            order = lookup_order(LookupOrderArgs(order_id=order_id), context)
        except ToolError as exc:
            records["order"] = {"error": exc.message}
        else:
            records["order"] = order
            email = order["customer"]["email"]
    if isinstance(email, str):
        try:
            records["customer"] = lookup_customer(LookupCustomerArgs(email=email), context)
        except ToolError as exc:
            records["customer"] = {"error": exc.message}
    return records
