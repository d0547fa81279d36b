"""The runtime's seam with the people who approve: what it asks, and what it reads back.

The runtime never imports the approvals side (reviews/). It talks to it through this
module, which both depend on:

1. Asking. When the policy sends a call to review, or a run cannot go on without a
   person, the step hands a ``CallReview`` or a ``StuckRun`` to ``open_request``, inside
   the step's transaction. The approvals app registers the function that opens the
   request (``register_opener``, from its ``AppConfig.ready``); it returns the request's
   id, which the run's audit event names. Without one registered (the reviews app is not
   installed), ``open_request`` raises ``ApprovalsUnavailable``: the step fails and the run
   is dead-lettered with that message, never parked where nobody would see it.
2. Reading back. A decision that resolves a call writes the outcome onto the call's
   Action (``action_decision_record``), in the decision's own transaction: the approved
   arguments and their hash, or the feedback, the outcome and who decided. The resumed
   step (runs.kernel.tool_step) reads only that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agentdesk.redaction import redact_text
from agents.definition import Agent, Tool
from policy.engine import Decision as PolicyDecision
from runs.models import GRANTED_OUTCOMES, Action, ReviewOutcome, Run

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class ApprovalsUnavailable(RuntimeError):
    """No approvals app registered an opener: nobody could decide the request."""


@dataclass(frozen=True)
class CallReview:
    """A proposed call the policy sent to a person, as the runtime hands it over.

    ``arguments``: validated, as JSON (what a reviewer sees and an approval hashes);
    ``context``: what the reviewer needs besides the call (runs.kernel.review_context), built
    outside the step's transaction.
    """

    run: Run
    action: Action
    agent: Agent
    tool: Tool
    arguments: dict[str, Any]
    verdict: PolicyDecision
    context: dict[str, Any]


@dataclass(frozen=True)
class StuckRun:
    """A run that cannot go on by itself (runs.kernel.transitions.park_for_human), and why."""

    run: Run
    error: dict[str, Any]


Opener = Callable[[CallReview | StuckRun], int]

_opener: Opener | None = None


def register_opener(opener: Opener | None) -> Opener | None:
    """Make ``opener`` the one that opens requests; returns the one it replaces.

    Called once by the approvals app when it is ready. None unregisters (tests).
    """
    global _opener
    replaced, _opener = _opener, opener
    return replaced


def open_request(ask: CallReview | StuckRun) -> int:
    """Open the request a person decides; its id. Inside the step's transaction."""
    if _opener is None:
        raise ApprovalsUnavailable(
            f"run {ask.run.pk} needs a person's decision, but no approvals app is installed "
            "to ask one (add 'reviews' to INSTALLED_APPS); nothing was opened"
        )
    return _opener(ask)


def action_decision_record(
    *,
    action_id: int,
    outcome: ReviewOutcome,
    decided_by: User | None,
    decided_at: datetime,
    arguments: dict[str, Any] | None = None,
    args_hash: str = "",
    feedback: str = "",
) -> None:
    """Write how a review resolved a call onto its action, once (inside the decision's
    transaction).

    An approval (``GRANTED_OUTCOMES``) names the arguments it covers and their hash; a
    rejection, the feedback for the model. An action resolved already is an error: the
    decision's transaction rolls back, and the action keeps the outcome it has.
    """
    granted = outcome in GRANTED_OUTCOMES
    if granted and (arguments is None or not args_hash):
        raise ValueError(f"an approval of action {action_id} must name its arguments and hash")
    written = Action.objects.filter(pk=action_id, review_outcome="").update(
        review_outcome=outcome,
        approved_arguments=arguments if granted else None,
        approved_args_hash=args_hash if granted else "",
        # Redacted when a person typed it; once more, as every writer of free text here.
        review_feedback="" if granted else redact_text(feedback),
        decided_by=decided_by,
        decided_at=decided_at,
    )
    if written != 1:
        raise RuntimeError(f"action {action_id} is resolved already, or does not exist")
