"""The step kernel: claim a run's next step, record it, end or park the run.

Every step goes through the same three moves (see runs.services for the whole story):
``claim`` takes a lease in a short transaction, the caller works outside any
transaction, and ``commit`` records the step under the lease and enqueues the next one.
A step that should run later (a backoff, a rate limit) is ``defer``red instead. How the
run's state changes on the way (start, finish, fail, park) is runs.kernel.transitions'.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from agentdesk.errors import ErrorClass, error_payload
from agentdesk.redaction import redact_text, redact_value
from agentdesk.statements import (
    select_row,
)
from audit.log import (
    audit_record,
)
from audit.models import AuditVerb
from runs.kernel.transitions import WORKER, dead_letter, enqueue_next_step, run_start
from runs.kernel.unit_of_work import LeaseLost, StepWork
from runs.models import (
    ACTIVE_STATES,
    Action,
    Degradation,
    Run,
    RunState,
    Step,
    StepKind,
    StepStatus,
)

if TYPE_CHECKING:
    pass


log = logging.getLogger("runs.services")


@dataclass
class _Chain:
    """The chaining block of this worker's current call (see ``chaining``)."""

    until: float  # time.monotonic() after which next steps go through the broker again
    kept: uuid.UUID | None = None  # the lease ``keep_next_step`` last took for this worker


_chain: ContextVar[_Chain | None] = ContextVar("agentdesk_chain", default=None)


@contextmanager
def chaining(seconds: float) -> Iterator[None]:
    """Within this block, a step due at once is kept by this worker, not sent to the broker.

    The step's commit takes the lease on the next step in the same UPDATE that records this
    one (``keep_next_step``), and the caller executes it straight away: no message to
    publish, consume and acknowledge, and no claim, which was about a third of a step's
    cost (docs/benchmarks.md). For ``seconds`` from now; after that, or for a step that
    is due later (a backoff), the next step goes through the broker as usual, so no run
    keeps a worker for long. A worker that dies holding a kept step holds a lease like
    any other: it expires and the sweeper enqueues the step again.
    """
    token = _chain.set(_Chain(until=time.monotonic() + seconds) if seconds > 0 else None)
    try:
        yield
    finally:
        _chain.reset(token)


def _keeps_next_step(countdown_s: float) -> bool:
    chain = _chain.get()
    return countdown_s <= 0 and chain is not None and time.monotonic() < chain.until


def kept_next_step(run: Run) -> bool:
    """Whether the last commit in this chaining block kept ``run``'s next step for us.

    Only a lease that ``keep_next_step`` took and that was committed counts: a commit that
    lost its lease reloads the run, whose token is then another worker's.
    """
    chain = _chain.get()
    return chain is not None and run.lease_token is not None and run.lease_token == chain.kept


def keep_next_step(run: Run) -> None:
    """Take the lease on the run's next step for this worker (the caller saves the run).

    What ``claim`` would do for the step, without the round trips: the commit's UPDATE
    writes it, on condition of the lease it ends. Like ``claim``, it leaves ``enqueued_at``
    alone: the stalled-run sweeper looks at a leased step's ``lease_expires_at``, and
    ``enqueued_at`` is indexed, so writing it would make every step's UPDATE write a new
    entry in each of the run table's indexes (no HOT update).
    """
    run.lease_token = uuid.uuid4()
    run.lease_expires_at = timezone.now() + timedelta(seconds=settings.AGENTDESK_STEP_LEASE_S)
    run.step_attempts = 1
    chain = _chain.get()
    if chain is not None:
        chain.kept = run.lease_token


def release_db_connection() -> None:
    """Give the database connection back to the pool before a long wait (a model call).

    With hundreds of steps in flight per worker, a connection held while the model thinks
    would need hundreds of connections. Inside a transaction (tests) nothing is released.
    """
    if not connection.in_atomic_block:
        connection.close()


# The fields a step may change. The others (the input, the trace id, who submitted it, the
# versions it runs with) are fixed when the run is created, and are not written again on
# every step: the input alone can be kilobytes.
STEP_FIELDS = tuple(
    f.name
    for f in Run._meta.concrete_fields
    if f.name
    not in {
        "id",
        "agent_name",
        "input",
        "trace_id",
        "prompt_version",
        "model",
        "submitted_by",
        "idempotency_key",
        "request_hash",
        "config_version",
        "purpose",
        "created_at",
    }
)


def claim(run_id: str, seq: int) -> Run | None:
    """Take the lease on step ``seq``; None if it is stale, held, or the run has ended.

    The usual case, a running run whose step ``seq`` is free, is one compare-and-set
    UPDATE (its WHERE is the whole condition, so of two workers holding the same message
    one wins) and one SELECT, without a transaction around them: two round trips instead
    of four. Everything else (the run's first step, which starts it and writes its audit
    event; a stale or held step, which is logged) goes through ``_claim_locked``, the
    first step at once.
    """
    now = timezone.now()
    if seq == 0:
        # A run's first step: the run is queued (the fast UPDATE below would match no row,
        # a wasted round trip for every run), or a redelivery the locked path sorts out.
        return _claim_locked(run_id, seq, now)
    token = uuid.uuid4()
    won = (
        Run.objects.filter(pk=run_id, next_seq=seq, state=RunState.RUNNING)
        .filter(Q(lease_token__isnull=True) | Q(lease_expires_at__lte=now))
        .update(
            lease_token=token,
            lease_expires_at=now + timedelta(seconds=settings.AGENTDESK_STEP_LEASE_S),
            step_attempts=F("step_attempts") + 1,
            updated_at=now,
        )
    )
    if won:
        # Ours until the lease expires: nobody else writes the row meanwhile.
        return select_row(Run, id=run_id)
    return _claim_locked(run_id, seq, now)


def _claim_locked(run_id: str, seq: int, now: datetime) -> Run | None:
    with transaction.atomic():
        run = select_row(Run, id=run_id, for_update=True)
        if run is None:
            log.warning("step task for unknown run %s ignored", run_id)
            return None
        if run.state not in ACTIVE_STATES or run.next_seq != seq:
            log.info(
                "stale step task %s/%s ignored (run at %s, %s)",
                run_id,
                seq,
                run.next_seq,
                run.state,
            )
            return None
        if run.lease_token is not None and run.lease_expires_at and run.lease_expires_at > now:
            log.info("step %s/%s is held by another worker; ignored", run_id, seq)
            return None
        run.lease_token = uuid.uuid4()
        run.lease_expires_at = now + timedelta(seconds=settings.AGENTDESK_STEP_LEASE_S)
        run.step_attempts += 1
        run.updated_at = now
        fields = ["lease_token", "lease_expires_at", "step_attempts", "updated_at"]
        work = StepWork(run)
        with work.recording():
            if run.state == RunState.QUEUED:
                fields += run_start(run, now=now)
        # The row is locked: the condition holds. The last statement: it may COMMIT.
        work.flush(fields, {"id": run.pk})
    return run


@contextmanager
def _undone_on_error(run: Run) -> Iterator[None]:
    """If the transaction fails, undo in memory what was done to ``run`` inside it too.

    The database rolled back; the run object must as well, or what ``apply`` had changed
    (an appended message, the next lease) would be written by the next commit, such as
    the dead letter that records the crash.
    """
    try:
        yield
    except BaseException:
        with suppress(DatabaseError):  # the database is in trouble; the lease will expire
            run.refresh_from_db()
        raise


def _lock_if_ours(run: Run, seq: int) -> bool:
    """Lock the run's row if our lease on step ``seq`` still holds (inside a transaction).

    Only the lease is checked, not the row read again: while the lease holds, nobody but
    its holder writes the row (a sweeper that finds it expired takes the token away, and
    every other writer acts on runs that are not running), so ``run`` as claimed is the
    row as it is.
    """
    ours = (
        Run.objects.select_for_update()
        .filter(pk=run.pk, lease_token=run.lease_token, next_seq=seq)
        .values_list("pk", flat=True)
        .first()
    )
    if ours is None:
        log.warning("lease on step %s lost; its result is discarded", seq)
        return False
    return True


def commit(
    run: Run,
    seq: int,
    apply: Callable[[Run, StepWork], None],
    *,
    countdown_s: float = 0,
    recorded: bool = True,
    steps: int = 1,
) -> bool:
    """Record a step's results if our lease still holds; enqueue (or keep) the next step.

    ``apply`` receives the run and the step's unit of work (runs.kernel.unit_of_work.StepWork),
    inside the transaction: it changes the run and adds to the work what the step records
    (its Step rows, its actions, their audit events). The work sends it all with the run's
    row, written last on condition of our lease. Returns False (and records nothing) when
    the lease was lost: another worker took the run over after ours expired, and its
    result is the one that counts.
    ``recorded=False``: ``apply`` ended or parked the run without taking the step (a limit,
    a crash), so the step number stays
    where it is and a requeued run takes exactly that step. ``steps``: how many steps
    ``apply`` recorded, from ``seq`` on (a model step with the read-only calls it made at
    once, runs.kernel.tool_step.read_calls_inline).
    """
    lease = run.lease_token
    work = StepWork(run)
    try:
        with _undone_on_error(run), transaction.atomic():
            with work.recording():
                stored = (run.checkpoint or {}).get("messages")
                stored_count = len(stored) if isinstance(stored, list) else 0
                apply(run, work)
                _redact_checkpoint(run, stored, stored_count)
            if recorded:
                run.next_seq = seq + steps
            run.step_attempts = 0
            run.lease_token = None
            run.lease_expires_at = None
            if run.state in ACTIVE_STATES:
                if recorded and _keeps_next_step(countdown_s):
                    keep_next_step(run)
                else:
                    enqueue_next_step(run, countdown_s=countdown_s)
            run.updated_at = timezone.now()
            # The last statement: it may COMMIT.
            work.flush(STEP_FIELDS, {"id": run.pk, "lease_token": lease, "next_seq": seq})
    except LeaseLost:
        log.warning("lease on step %s lost; its result is discarded", seq)
        return False
    except IntegrityError:
        # The other worker that took the run over has recorded this very step (the Step's
        # unique run and seq), which is a lost lease too; anything else is a real error.
        if Run.objects.filter(pk=run.pk, lease_token=lease, next_seq=seq).exists():
            raise
        log.warning("lease on step %s lost; its result is discarded", seq)
        return False
    return True


def _redact_checkpoint(run: Run, stored: Any = None, stored_count: int = 0) -> None:
    """Secrets out of the checkpoint: the conversation the model sees next, the last error.

    Every step that adds to the checkpoint commits through here, so nothing a tool returned
    or the model wrote reaches the next prompt, or the database, unredacted. The last error
    (``last_error``, an endpoint's words) was redacted when it was built (error_payload);
    it is small and rare, so it is redacted again here rather than trusted.

    ``stored`` is the message list as it was read from the database, ``stored_count`` its
    length then: those messages were redacted before they were stored (by run_submit or an
    earlier commit), and redaction is idempotent, so only the messages ``apply`` appended
    to that same list are redacted here. Redacting the whole conversation again on every
    step cost about an eighth of a worker's CPU with the example agent, and more with every
    step a run takes. If ``apply`` put a different list in place, all of it is redacted.
    (So when the rules change while a run is under way, a new pattern or another configured
    key, the messages it already has are not redacted again; those it gets from then on are.)
    """
    checkpoint = run.checkpoint or {}
    if checkpoint.get("last_error"):
        checkpoint["last_error"] = redact_value(checkpoint["last_error"])
    messages = checkpoint.get("messages")
    if not messages:
        return
    if messages is stored and isinstance(messages, list):
        if len(messages) > stored_count:
            messages[stored_count:] = redact_value(messages[stored_count:])
        return
    run.checkpoint["messages"] = redact_value(messages)


def defer(run: Run, seq: int, *, countdown_s: float, reason: str) -> bool:
    """Give the lease back without recording a step; try the same step again later."""
    with _undone_on_error(run), transaction.atomic():
        if not _lock_if_ours(run, seq):
            return False
        run.lease_token = None
        run.lease_expires_at = None
        run.step_attempts = max(run.step_attempts - 1, 0)  # not a crash
        enqueue_next_step(run, countdown_s=countdown_s)
        run.save(update_fields=STEP_FIELDS)
    log.info("step %s deferred %.1f s: %s", seq, countdown_s, reason)
    return True


def action_audit(
    action: Action,
    *,
    trace_id: str,
    before: str | None,
    status: str | None = None,
    **after: Any,
) -> None:
    """The audit event of a proposed tool call's change of state (inside its transaction).

    ``action.proposed`` when the model proposes it, then ``action.<status>`` when its step
    records how it ended (succeeded, failed, blocked, rejected), ``before`` being
    ``proposed``, or ``executing`` when the tool was called. ``executing`` itself is not a
    separate event: it is the intent marker written just before the effect, outside any
    transaction, so that a crash leaves it visible on the action; the outcome's event
    says the call ran. ``status``: the status the event records, when the action already
    holds a later one (a read-only call made and settled within its model step).
    """
    status = status or action.status
    audit_record(
        actor=None,
        actor_label=WORKER,
        verb=AuditVerb(f"action.{status}"),
        object_type="action",
        object_id=str(action.pk),
        before={"status": before} if before else None,
        after={"status": status, "tool": action.tool, **after},
        trace_id=trace_id,
    )


def mark_degraded(run: Run, *reasons: Degradation) -> None:
    """Record on the run (inside ``apply``) why its outcome is not a plain success.

    Each reason once, in the order first seen; the step's commit writes the field.
    """
    degraded = list(run.degraded or ())
    for reason in reasons:
        if reason not in degraded:
            degraded.append(str(reason))
    run.degraded = degraded


def dead_letter_after_crash(run: Run, seq: int, exc: BaseException) -> None:
    """Dead-letter a run whose step raised something the runtime did not expect."""
    error = error_payload(
        ErrorClass.INTERNAL_ERROR,
        redact_text(f"step {seq} raised {type(exc).__name__}: {exc}")[:1000],
    )
    with transaction.atomic():
        if not _lock_if_ours(run, seq):
            return
        run.lease_token = None
        run.lease_expires_at = None
        dead_letter(run, error)
        run.save(update_fields=STEP_FIELDS)


STATE_CONTENT_MAX = 500


def conversation_state(messages: list[dict[str, Any]], *, fresh: bool = False) -> dict[str, Any]:
    """What the agent knew: the size of the conversation and the start of its last message.

    ``fresh``: the last message is this step's own and not redacted yet (a read made within
    its model step sees the reply and the results before it). It is redacted before it is
    cut: a cut through a secret would leave its first half, which the step record's
    redaction would no longer recognise. Stored messages were redacted when they were
    stored, and a cut of those reveals nothing; redacting them again would cost a long
    message's scan on every step (about 1 ms for 2,500 characters).
    """
    last = messages[-1] if messages else {}
    content = last.get("content") or ""
    if fresh and len(content) > STATE_CONTENT_MAX:
        content = redact_text(content)
    return {
        "messages": len(messages),
        "last_role": last.get("role", ""),
        "last_content": content[:STATE_CONTENT_MAX],
    }


# The fields of a step that carry what the model, a tool or an endpoint said (``model`` is
# the name the endpoint answered with). The others are numbers, the runtime's own words
# (``error_class``, ``route``) or the prompt version.
STEP_REDACTED = ("state", "action", "reason", "outcome", "model")


@dataclass
class StepRecord:
    """The fields of a Step, gathered while the work runs outside the transaction."""

    kind: StepKind
    state: dict[str, Any]
    started_at: Any
    action: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    confidence: float | None = None
    outcome: dict[str, Any] = field(default_factory=dict)
    status: StepStatus = StepStatus.OK
    error_class: str = ""
    latency_ms: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: Decimal | None = None
    model: str = ""
    route: str = ""
    prompt_version: str = ""
    attempt: int = 1

    def failed(self, error: dict[str, Any]) -> None:
        self.status = StepStatus.ERROR
        self.error_class = error["class"]
        self.outcome = {**self.outcome, "error": error}

    def build(self, run: Run, seq: int) -> Step:
        """The step, not saved; what the agent knew, did, said and got is redacted first."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in STEP_REDACTED:
            fields[name] = redact_value(fields[name])
        return Step(run=run, seq=seq, finished_at=timezone.now(), **fields)


def args_hash(tool: str, arguments: dict[str, Any] | None, raw: str) -> str:
    material = (
        json.dumps([tool, arguments], sort_keys=True, separators=(",", ":"))
        if arguments is not None
        else f"{tool}\0{raw}"
    )
    return hashlib.sha256(material.encode()).hexdigest()
