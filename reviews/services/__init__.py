"""Approval requests: open, claim, decide, escalate, expire, and resume the run once.

Every transition locks the request row (``select_for_update``) and checks its state
before it changes anything, so two reviewers pressing "approve" at the same moment make
one decision: the second waits for the first's commit, then finds the request decided
and is told who decided and how. Each transition writes its audit event in the same
transaction, and a decision that completes a request moves the run from
waiting_for_approval back to running and enqueues its next step on commit: exactly one
resume, because only the transaction that changes the run's state enqueues it.

A decision that resolves a call writes its outcome onto the call's action in the same
transaction (the approved arguments, which an edit replaced, and their hash; or the
feedback; and who): the run then executes the call as approved or, on a rejection, hands
the feedback to the model as the tool's result, reading only the action (runs.kernel.tool_step).
The runtime opens requests through ``request_open``, which this app registers with
runs.kernel.approvals; the run's changes of state are runs.kernel.transitions'.

The modules, each named for what it does: ``opening`` (the runtime's opener, the queue a
request goes to), ``claiming``, ``deciding`` (approve, edit, reject, escalate, and what a
decision writes), ``bulk``, ``expiry`` (the SLA clock) and ``refusals`` (why a decision is
refused, separation of duties included). The names below are the app's public surface:
import them from here, or from the module that defines them; patch them there.
"""

from reviews.services.bulk import BulkRefused, approval_bulk_approve
from reviews.services.claiming import CLAIM_MINUTES, approval_claim
from reviews.services.deciding import (
    FEEDBACK_MAX,
    SLA,
    Outcome,
    approval_approve,
    approval_edit,
    approval_escalate,
    approval_reject,
    shown_arguments,
)
from reviews.services.expiry import approval_is_granted, approvals_expire_overdue
from reviews.services.opening import (
    NoQueue,
    approval_request_open,
    queue_for_call,
    request_hash,
    request_open,
    run_escalation_open,
)
from reviews.services.refusals import AlreadyDecided, DecisionRefused, DutyRefused, decider_barrier

__all__ = [
    "CLAIM_MINUTES",
    "FEEDBACK_MAX",
    "SLA",
    "AlreadyDecided",
    "BulkRefused",
    "DecisionRefused",
    "DutyRefused",
    "NoQueue",
    "Outcome",
    "approval_approve",
    "approval_bulk_approve",
    "approval_claim",
    "approval_edit",
    "approval_escalate",
    "approval_is_granted",
    "approval_reject",
    "approval_request_open",
    "approvals_expire_overdue",
    "decider_barrier",
    "queue_for_call",
    "request_hash",
    "request_open",
    "run_escalation_open",
    "shown_arguments",
]
