"""A run's changes of state: one writer per transition, each with its audit event.

Every change of a run's state goes through one function here, whoever makes it (the step
kernel, a reviewer's decision, the SLA clock, an operator requeueing a dead letter), so a
run's transitions read alike in the audit log and none of them is written twice:

    queued --run_start--> running                     (the first step's claim)
    running --park_for_approval--> waiting_for_approval  (a call sent to review)
    running --park_for_human--> needs_human           (the runtime cannot go on alone)
    waiting_for_approval | needs_human --run_resume--> running   (a decision)
    running | needs_human --finish--> succeeded | failed | dead_lettered
    dead_lettered --run_requeue--> running            (an operator)

Each function changes the run in memory and records the audit event inside the caller's
transaction (invariant 7); the caller writes the row: a step's ``commit`` (runs.kernel.stepping),
or ``save()`` in a service. ``enqueue_next_step`` puts the next step on the broker once
that transaction commits.

A leaf of the runtime: it imports the models, the audit log and the seam with the
approvals side (runs.kernel.approvals), never the step kernel or the tasks. The task that runs a
step registers its sender here (runs.apps), so enqueueing needs no import of the task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from agentdesk.redaction import redact_row, redact_text, redact_value
from audit.log import audit_record
from audit.models import AuditVerb
from runs.kernel.approvals import StuckRun, open_request
from runs.kernel.sandbox import sandbox_settled
from runs.models import DeadLetter, Run, RunState

if TYPE_CHECKING:
    from datetime import datetime

    from django.contrib.auth.models import User

log = logging.getLogger("runs.services")

WORKER = "worker"  # the actor label of changes the runtime makes on its own

# Sends step ``seq`` of a run to a worker after ``countdown`` seconds (runs.tasks.run_step).
StepSender = Callable[[str, int, float], None]
_step_sender: StepSender | None = None


def step_sender_register(sender: StepSender | None) -> StepSender | None:
    """Make ``sender`` the one that puts steps on the broker; returns the one it replaces."""
    global _step_sender
    replaced, _step_sender = _step_sender, sender
    return replaced


def enqueue_next_step(run: Run, *, countdown_s: float = 0) -> None:
    """Put the run's next step on the broker once the current transaction commits.

    ``robust``: a broker that is down must not undo a committed step; the stalled-run
    sweeper enqueues it again later. ``enqueued_at`` is when the step is due, so the
    sweeper does not mistake a backoff for a lost message. The caller saves the run.
    """
    sender = _step_sender
    if sender is None:
        raise RuntimeError("no step sender is registered: is the runs app installed?")
    run_id, seq = str(run.id), run.next_seq
    run.enqueued_at = timezone.now() + timedelta(seconds=countdown_s)
    transaction.on_commit(lambda: sender(run_id, seq, countdown_s), robust=True)


def run_audit_state(
    run: Run,
    before: str,
    *,
    actor: User | None = None,
    actor_label: str = WORKER,
    verb: AuditVerb | None = None,
    **after: Any,
) -> None:
    """The audit event of a run's change of state, inside the transaction that makes it.

    Only the transitions below call it. ``actor_label`` names a change without a person
    (``worker``, ``sla``, ``system``).
    """
    audit_record(
        actor=actor,
        actor_label="" if actor is not None else actor_label,
        verb=verb or AuditVerb(f"run.{run.state}"),
        object_type="run",
        object_id=str(run.id),
        before={"state": before},
        after={"state": run.state, **after},
        trace_id=run.trace_id,
    )


def run_error_set(run: Run, error: dict[str, Any] | None) -> dict[str, Any] | None:
    """Set ``Run.error``, redacted; returns it, for the records that copy it.

    Every writer of a run's error goes through here (the runtime ending or parking a run, a
    person ending a stuck one): its words may be an endpoint's, a tool's or a reviewer's.
    The errors error_payload built are redacted already; this costs a few dictionary
    lookups for them (clean texts are remembered) and catches one built by hand.
    """
    run.error = redact_value(error) if error is not None else None
    return run.error


def run_start(run: Run, *, now: datetime) -> list[str]:
    """Queued → running, at its first step's claim; returns the fields it set."""
    run.state = RunState.RUNNING
    run.started_at = now
    run_audit_state(run, RunState.QUEUED, verb=AuditVerb.RUN_STARTED)
    return ["state", "started_at"]


def finish(
    run: Run,
    state: RunState,
    *,
    output: str | None = None,
    error: dict[str, Any] | None = None,
    actor: User | None = None,
    actor_label: str = WORKER,
    **after: Any,
) -> None:
    """End the run: succeeded, failed or dead-lettered (a dead letter is filed with it).

    ``output``: the model's final answer (a hostile endpoint's words: redacted); None
    leaves the run's as it is. ``actor``: the person who ended it (a stuck run's request
    rejected), ``after``: what else the audit event names.
    """
    before = run.state
    run.state = state
    if output is not None:
        run.output = redact_text(output)
    error = run_error_set(run, error)
    run.finished_at = timezone.now()
    run_audit_state(run, before, actor=actor, actor_label=actor_label, **after, error=error)
    if state == RunState.DEAD_LETTERED and not run.is_sandbox:  # the eval records it
        redact_row(DeadLetter(run=run, seq=run.next_seq, error=error or {})).save(force_insert=True)
    sandbox_settled(run)
    log.info("run %s %s%s", run.id, state, f": {error['class']}" if error else "")


def fail(run: Run, error: dict[str, Any]) -> None:
    finish(run, RunState.FAILED, error=error)


def dead_letter(run: Run, error: dict[str, Any]) -> None:
    finish(run, RunState.DEAD_LETTERED, error=error)


def park_for_approval(run: Run, *, request: int) -> None:
    """Running → waiting for approval, on the request just opened for one of its calls."""
    before = run.state
    run.state = RunState.WAITING_FOR_APPROVAL
    run_audit_state(run, before, request=request)


def park_for_human(run: Run, error: dict[str, Any]) -> None:
    """Stop the run until a person acts (inside the step's ``apply``); not an end state.

    The person is asked through a request in the agent's escalation queue, opened through
    the seam with the approvals side (runs.kernel.approvals.open_request): resume the run, or end
    it.
    """
    before = run.state
    run.state = RunState.NEEDS_HUMAN
    stored = run_error_set(run, error)
    assert stored is not None
    run_audit_state(run, before, error=stored)
    if run.is_sandbox:
        sandbox_settled(run)  # nobody is asked: the sandbox stops here (runs.kernel.sandbox)
        return
    open_request(StuckRun(run=run, error=stored))
    log.info("run %s needs a human: %s", run.id, error["class"])


def run_resume(
    run: Run,
    *,
    actor: User | None,
    actor_label: str,
    restart: bool = False,
    **after: Any,
) -> None:
    """Waiting for approval or for a person → running, once a decision resolved it.

    ``restart``: a person resumes a stuck run (needs_human): the fallback chain from its
    primary and a fresh budget, whose baseline moves to now, so a run stopped by a limit
    gets the agent's limits once more from here, not a loop back into the same limit.
    """
    before = run.state
    if restart:
        checkpoint = run.checkpoint
        checkpoint["link"] = 0
        checkpoint["attempt"] = 0
        checkpoint.pop("last_error", None)
        checkpoint["budget_base"] = {
            "steps": run.next_seq,
            "tool_calls": run.tool_calls,
            "tokens": run.tokens_in + run.tokens_out,
            "cost_usd": str(run.cost_usd),
            "at": timezone.now().isoformat(),
        }
        run.error = None
    run.state = RunState.RUNNING
    enqueue_next_step(run)
    run_audit_state(
        run, before, actor=actor, actor_label=actor_label, verb=AuditVerb.RUN_RESUMED, **after
    )


def run_requeue(run: Run, *, actor: User | None) -> None:
    """Dead-lettered → running from its last checkpoint (never from the start).

    Completed steps and side effects stay done: the run continues at its next step with
    a fresh fallback chain and a fresh deadline.
    """
    before = run.state
    run.state = RunState.RUNNING
    run.error = None
    run.finished_at = None
    run.started_at = timezone.now()
    run.step_attempts = 0
    run.lease_token = None
    run.lease_expires_at = None
    run.checkpoint.update(attempt=0, link=0, malformed_streak=0)
    run_audit_state(
        run,
        before,
        actor=actor,
        actor_label="system",
        verb=AuditVerb.RUN_REQUEUED,
        next_seq=run.next_seq,
    )
    enqueue_next_step(run)
