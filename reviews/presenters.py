"""What the reviewers' pages show, computed from a request: inbox rows, value trees, the pane.

The views check access, call a service and render; the shapes they render come from
here, so a page and its htmx fragment are built by one function.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from agentdesk.http import HtmxHttpRequest
from agents.definition import Tool
from agents.registry import UnknownAgent, agent_get
from policy.engine import FLAG_FACTS_UNAVAILABLE, FLAG_FOREIGN
from reviews import selectors, services
from reviews.forms import (
    DecisionForm,
    EscalateForm,
    RejectForm,
    SchemaForm,
    initial_arguments,
)
from reviews.models import ApprovalRequest, DecisionKind

_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


# --- rows and trees ------------------------------------------------------------------


@dataclass(frozen=True)
class InboxRow:
    """One line of the inbox, its texts formatted here rather than by template filters.

    The list is re-rendered on every live update, with up to PAGE_SIZE rows; date and
    timesince filters per row were most of its rendering time (bench/inbox.py).
    """

    request: ApprovalRequest
    amount: str
    summary: str
    overdue: bool
    claimed_by: str
    can_decide: bool
    url: str
    due_text: str  # "due in 25 min" / "overdue 3 h"
    waited_text: str  # "waiting 4 min"
    due_title: str  # "due 2026-12-01 14:37"
    arrived_title: str
    confidence_text: str  # "0.77", or "" when none was stated
    threshold_text: str


def _span(seconds: float) -> str:
    """A duration as a reviewer reads it at a glance: 40 s, 25 min, 3 h, 2 d."""
    seconds = max(seconds, 0)
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} d"


def _stamp(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")


def inbox_row(
    approval: ApprovalRequest, *, now: datetime, decidable: set[int], detail_url: str
) -> InboxRow:
    amount, summary = call_summary(approval.arguments)
    to_due = (approval.due_at - now).total_seconds()
    return InboxRow(
        request=approval,
        amount=amount,
        summary=summary,
        overdue=to_due < 0,
        claimed_by=claimer(approval, now),
        can_decide=approval.queue_id in decidable,
        url=detail_url.replace("/0/", f"/{approval.pk}/"),
        due_text=f"overdue {_span(-to_due)}" if to_due < 0 else f"due in {_span(to_due)}",
        waited_text=f"waiting {_span((now - approval.created_at).total_seconds())}",
        due_title=f"due {_stamp(approval.due_at)}",
        arrived_title=f"arrived {_stamp(approval.created_at)}",
        confidence_text="" if approval.confidence is None else f"{approval.confidence:.2f}",
        threshold_text="" if approval.threshold is None else f"{approval.threshold:.2f}",
    )


def call_summary(arguments: Any) -> tuple[str, str]:
    """The amount (shown large) and the other scalar arguments, one line."""
    if not isinstance(arguments, dict):
        return "", ""
    amount = arguments.get("amount")
    parts = [
        f"{key}: {value}"
        for key, value in arguments.items()
        if key != "amount" and isinstance(value, str | int | float)
    ]
    return ("" if amount is None else str(amount)), " · ".join(parts)[:160]


def claimer(request: ApprovalRequest, now: datetime) -> str:
    if request.claimed_by_id and request.claimed_until and request.claimed_until > now:
        return request.claimed_by.get_username() if request.claimed_by else ""
    return ""


@dataclass(frozen=True)
class Node:
    """A JSON value shaped for the records template: a dict, a table, a list or a scalar."""

    kind: str  # "dict", "table", "list", "scalar"
    value: Any = None
    items: tuple[tuple[str, Node], ...] = ()
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[Node, ...], ...] = ()
    children: tuple[Node, ...] = ()


FLAG_LABELS = {
    FLAG_FOREIGN: "reaches another customer's records",
    FLAG_FACTS_UNAVAILABLE: "its facts could not be looked up",
}


def _evidence(raw: Any) -> dict[str, Any] | None:
    """What the policy read besides the arguments, shaped for the "what the policy saw" table."""
    if not isinstance(raw, dict):
        return None
    sums: dict[str, Any] = raw["sums"] if isinstance(raw.get("sums"), dict) else {}
    return {
        "subject": raw.get("subject", ""),
        "amount": raw.get("amount", 0),
        "foreign": raw.get("foreign") or [],
        "trouble": raw.get("trouble", ""),
        "facts": tree(raw["facts"]) if raw.get("facts") else None,
        "sums": [
            (label, sums[scope])
            for scope, label in (
                ("record", "this record"),
                ("run", "this run"),
                ("subject", "this customer"),
            )
            if isinstance(sums.get(scope), dict)
        ],
    }


def tree(value: Any, depth: int = 0) -> Node:
    """Records (any JSON) as nested nodes; lists of objects become tables."""
    if depth > 5:
        return Node("scalar", value=str(value)[:500])
    if isinstance(value, dict):
        # Plain facts first (ids and names leading), nested records and tables after them:
        # jsonb keeps no key order, so the page imposes one a reader can scan.
        def rank(key: str) -> tuple[int, int]:
            nested = isinstance(value[key], dict | list)
            lead = key == "id" or key.endswith("_id") or key in ("name", "email", "status")
            return (1 if nested else 0, 0 if lead else 1)

        keys = sorted(value, key=lambda k: rank(str(k)))
        return Node(
            "dict",
            items=tuple((str(k).replace("_", " "), tree(value[k], depth + 1)) for k in keys),
        )
    if isinstance(value, list):
        if value and all(isinstance(item, dict) for item in value):
            columns: list[str] = []
            for item in value:
                columns.extend(str(key) for key in item if str(key) not in columns)
            rows = tuple(
                tuple(tree(item.get(column, ""), depth + 1) for column in columns) for item in value
            )
            return Node("table", columns=tuple(columns), rows=rows)
        return Node("list", children=tuple(tree(item, depth + 1) for item in value))
    if value is None:
        return Node("scalar", value="—")
    if isinstance(value, bool):
        return Node("scalar", value="yes" if value else "no")
    if isinstance(value, str) and _ISO_DATETIME.match(value):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return Node("scalar", value=value)
        if moment.tzinfo is not None:
            moment = timezone.localtime(moment)
        return Node("scalar", value=moment.strftime("%Y-%m-%d %H:%M"))
    return Node("scalar", value=value)


def tool_of(approval: ApprovalRequest) -> Tool | None:
    try:
        return agent_get(approval.agent_name).tool(approval.tool)
    except UnknownAgent:
        return None


def _in_schema_order(approval: ApprovalRequest) -> list[tuple[str, Any]]:
    """The arguments in the order the tool declares them (jsonb does not keep key order)."""
    arguments = approval.arguments if isinstance(approval.arguments, dict) else {}
    tool = tool_of(approval)
    declared = list(tool.input_schema.model_fields) if tool is not None else []
    names = [name for name in declared if name in arguments]
    names += [name for name in arguments if name not in names]
    return [(name, arguments[name]) for name in names]


def live_mode() -> str:
    """Websockets need a channel layer that crosses processes (Redis); else poll."""
    return "socket" if settings.REDIS_URL else "poll"


# --- the detail pane -------------------------------------------------------------------------


def edit_form(approval: ApprovalRequest, data: Any = None) -> SchemaForm | None:
    tool = tool_of(approval)
    if tool is None:
        return None
    schema = tool.input_schema.model_json_schema()
    return SchemaForm(data, schema=schema, initial=initial_arguments(approval.arguments, schema))


def detail_context(
    request: HtmxHttpRequest,
    approval: ApprovalRequest,
    *,
    notice: str = "",
    notice_kind: str = "info",
    open_form: str = "",
    **forms: Any,
) -> dict[str, Any]:
    now = timezone.now()
    decide = approval.is_pending and selectors.can_decide(user=request.user, request=approval)
    # Permitted in the queue, yet barred from this request (their own run): the page says
    # why instead of offering buttons that would be refused.
    barrier = services.decider_barrier(request=approval, user=request.user) if decide else ""
    context_data = approval.context if isinstance(approval.context, dict) else {}
    decisions = list(selectors.request_decisions(request=approval))
    visible = set(selectors.queue_ids_visible(user=request.user))
    approvals = {
        d.decided_by_id
        for d in decisions
        if d.kind in (DecisionKind.APPROVE, DecisionKind.EDIT) and d.args_hash == approval.args_hash
    }
    amount, _ = call_summary(approval.arguments)
    run_input = context_data.get("input") or approval.run.input
    records = context_data.get("records") or {}
    order = records.get("order") if isinstance(records, dict) else None
    currency = order.get("currency", "") if isinstance(order, dict) else ""
    final = next((d for d in reversed(decisions) if d.kind != DecisionKind.ESCALATE), None)
    context: dict[str, Any] = {
        "approval": approval,
        "final_decision": None if approval.is_pending else final,
        "now": now,
        "overdue": approval.is_pending and approval.due_at < now,
        "claimed_by": claimer(approval, now),
        "can_decide": decide,
        "barrier": barrier,
        "amount": amount,
        "currency": currency,
        "arguments": _in_schema_order(approval),
        "run_input": run_input if isinstance(run_input, dict) else {},
        "input_tree": tree(run_input),
        "history": [
            {
                "tool": step.get("tool", ""),
                "args": ", ".join(f"{k}={v}" for k, v in (step.get("arguments") or {}).items()),
                "status": step.get("status", ""),
                "error": step.get("error", ""),
            }
            for step in context_data.get("history") or []
            if isinstance(step, dict)
        ],
        "records": tree(records) if records else None,
        "evidence": _evidence(context_data.get("evidence")),
        "flags": [FLAG_LABELS.get(flag, flag) for flag in approval.flags or []],
        "decisions": decisions,
        "approvals_so_far": len(approvals),
        # A person approves a hash once: the approve button says so instead (edit, reject
        # and escalate stay).
        "approved_by_you": request.user.pk in approvals,
        "notice": notice,
        "notice_kind": notice_kind,
        "open_form": open_form,
        # A visible request's run is visible (runs.selectors.run_get_visible), given the
        # permission that opens the runs pages.
        "run_visible": request.user.has_perm("runs.view_run"),
        # Queues an escalation went to: named only if the reader may open them.
        "visible_queue_ids": visible,
        # A stuck run's request: the error that stopped it (approve resumes, reject ends).
        "run_error": context_data.get("error") if approval.is_run_escalation else None,
    }
    if decide:
        context["approve_form"] = forms.get("approve_form") or DecisionForm(
            initial={"args_hash": approval.args_hash}
        )
        context["edit_form"] = (
            None if approval.is_run_escalation else forms.get("edit_form") or edit_form(approval)
        )
        context["edit_meta"] = forms.get("edit_meta") or DecisionForm(
            initial={"args_hash": approval.args_hash}, prefix="edit"
        )
        context["reject_form"] = forms.get("reject_form") or RejectForm()
        targets = selectors.escalation_targets(request=approval, user=request.user, visible=visible)
        context["escalate_form"] = forms.get("escalate_form") or (
            EscalateForm(targets=targets) if targets else None
        )
    return context
