"""How the support agent's calls are reviewed: its policy and what a reviewer is shown.

The policy is code for now; the operator console makes it a versioned configuration.
Every refund and cancellation is irreversible and so waits for a person; more than EUR 100
refunded on one order (this call and every other on it) goes to senior reviewers, over
EUR 250 two of them must agree, as for more than EUR 300 to one customer in 30 days. A
call on another customer's order or ticket is blocked (``examples.support.facts``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents.definition import ToolContext, ToolError
from examples.support.tools import (
    LookupCustomerArgs,
    LookupOrderArgs,
    lookup_customer,
    lookup_order,
)
from policy.engine import Policy, ReviewRule

# Money rules read sums, not single calls: ``amount`` is what this call moves (a refund's
# amount, a cancellation's refunded balance), ``sums.record`` what other calls moved on the
# same order and ``sums.subject`` for the same customer within the window (executed,
# approved and pending alike), so two refunds of 60.00 on one order are one of 120.00.
MONEY_TOOLS = ("issue_refund", "cancel_order")
SUPPORT_POLICY = Policy(
    thresholds={"send_reply": 0.6, "issue_refund": 0.8, "cancel_order": 0.8},
    rules=(
        ReviewRule(
            name="refund_over_100",
            when="amount + sums.record.total > 100.0",
            tools=MONEY_TOOLS,
            queue="refunds-senior",
            description="More than EUR 100 refunded on one order is checked by a senior.",
        ),
        ReviewRule(
            name="refund_over_250",
            when="amount + sums.record.total > 250.0",
            tools=MONEY_TOOLS,
            queue="refunds-senior",
            approvals=2,
            description="More than EUR 250 refunded on one order needs two seniors.",
        ),
        ReviewRule(
            name="customer_over_300",
            when="amount + sums.subject.total > 300.0",
            tools=MONEY_TOOLS,
            queue="refunds-senior",
            approvals=2,
            description="More than EUR 300 refunded to one customer within 30 days needs "
            "two seniors.",
        ),
    ),
    queue="support",
    tool_queues={"issue_refund": "refunds", "cancel_order": "refunds"},
    on_foreign_subject="block",
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
