"""Queues, parked runs and their approval requests, built directly for page tests.

A real Run and Action come first, as the worker would have left them: the run waiting
for approval, the action proposed with the policy's verdict. Tests of the whole flow (the
policy parking a run) use tests/reviews/test_flow.py's way instead.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from guardian.shortcuts import assign_perm

from agentdesk.roles import roles_sync
from reviews.models import ApprovalRequest, Queue
from reviews.services.opening import request_hash
from runs.models import Action, Run, RunState

REFUND = {"order_id": "SO-1002", "amount": "29.00", "reason": "teapot arrived broken"}
REPLY = {"ticket_id": "T-0002", "body": "Sorry about the teapot: we refunded it."}
RISKS = {"issue_refund": "irreversible", "cancel_order": "irreversible", "send_reply": "write"}


def user_make(username: str, role: str | None = "reviewer") -> Any:
    # No password: tests log in with force_login, and hashing one costs half a second.
    user = get_user_model().objects.create_user(username=username)
    if role:
        user.groups.add(roles_sync()[role])
    return user


def queue_make(
    slug: str, *, deciders: tuple[Any, ...] = (), viewers: tuple[Any, ...] = ()
) -> Queue:
    queue = Queue.objects.create(slug=slug, name=slug.replace("-", " ").title(), sla_minutes=30)
    for user in deciders:
        assign_perm("reviews.view_queue", user, queue)
        assign_perm("reviews.decide_queue", user, queue)
    for user in viewers:
        assign_perm("reviews.view_queue", user, queue)
    return queue


def request_make(
    *,
    queue: Queue,
    tool: str = "issue_refund",
    arguments: dict[str, Any] | None = None,
    rule: str = "risk",
    rationale: str = "The teapot arrived broken; refund its price.",
    confidence: float | None = 0.72,
    due_in_minutes: int = 30,
    approvals_required: int = 1,
    context: dict[str, Any] | None = None,
    run: Run | None = None,
    proposed_seq: int = 1,
) -> ApprovalRequest:
    """A pending request of ``queue``; on a new parked run unless ``run`` is given."""
    if arguments is None:
        arguments = dict(REPLY if tool == "send_reply" else REFUND)
    run_input = {
        "ticket_id": "T-0002",
        "customer_email": "jane@example.com",
        "subject": "My teapot arrived shattered",
        "body": "Order SO-1002: the teapot is in pieces. Please refund it.",
    }
    if run is None:
        run = Run.objects.create(
            agent_name="support",
            input=run_input,
            state=RunState.WAITING_FOR_APPROVAL,
            trace_id=uuid.uuid4().hex,
            prompt_version="test",
            model="test-model",
            request_hash=uuid.uuid4().hex,
        )
    digest = request_hash(tool, arguments)
    action = Action.objects.create(
        run=run,
        proposed_seq=proposed_seq,
        index=0,
        tool_call_id=f"call_{uuid.uuid4().hex[:8]}",
        tool=tool,
        raw_arguments="{}",
        arguments=arguments,
        args_hash=digest,
        rationale=rationale,
        confidence=confidence,
        idempotency_key=f"{run.pk}:{proposed_seq}:0",
        verdict="review",
        policy_rule=rule,
        policy_version="pol-test",
    )
    now = timezone.now()
    return ApprovalRequest.objects.create(
        queue=queue,
        run=run,
        action=action,
        agent_name="support",
        tool=tool,
        risk=RISKS.get(tool, "write"),
        arguments=arguments,
        args_hash=digest,
        rule=rule,
        routing_reason=f"{tool} is {RISKS.get(tool, 'write')}: a person approves it",
        threshold=0.8,
        policy_version="pol-test",
        approvals_required=approvals_required,
        rationale=rationale,
        confidence=confidence,
        context=context
        if context is not None
        else {
            "input": run_input,
            "history": [
                {
                    "tool": "lookup_order",
                    "arguments": {"order_id": "SO-1002"},
                    "status": "succeeded",
                    "error": "",
                }
            ],
            "records": {
                "order": {
                    "order_id": "SO-1002",
                    "total": "41.50",
                    "currency": "EUR",
                    "refundable_amount": "41.50",
                },
                "customer": {
                    "email": "jane@example.com",
                    "refunds": [{"order_id": "SO-0999", "amount": "5.00"}],
                },
            },
        },
        due_at=now + timedelta(minutes=due_in_minutes),
    )
