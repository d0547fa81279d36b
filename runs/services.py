"""The runtime: submit a run, execute its steps, recover stalled runs.

A run advances one step at a time; a Celery task takes a step and, while the next one is
due at once, the steps after it (runs.kernel.stepping.chaining):

1. Claim: check that the task's step number is the run's next one and that no live lease
   is held, and take a lease (one compare-and-set UPDATE). A redelivered or duplicated
   task fails this check and does nothing.
2. Work, outside any transaction: one model call (with the read-only calls of its reply,
   runs.kernel.tool_step.read_calls_inline) or one tool call. Nothing holds a database
   connection busy while the model thinks.
3. Commit: record the step(s) and the new checkpoint, advance ``next_seq`` and write the
   run on condition that the lease is still ours (runs.kernel.stepping.commit); enqueue or keep
   the next step. ``(run, seq)`` is unique, so a step can never be recorded twice.

While a task works, a heartbeat renews its lease (runs.kernel.leases), so a slow step keeps it.
A worker killed between 1 and 3 stops renewing it, and the lease expires within
``AGENTDESK_STEP_LEASE_S``; ``runs_recover_stalled`` (on a beat schedule) re-enqueues such
runs, and the step is redone. Model calls have no side
effects; tool calls carry the action's idempotency key, which the tool's backend enforces
with a unique constraint, so a redone tool call returns the stored result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone
from pydantic import BaseModel, ValidationError

from agentdesk.errors import ErrorClass, error_payload
from agentdesk.logging import trace_context
from agentdesk.redaction import redact_value
from agents.definition import Agent, OnLimit
from agents.registry import UnknownAgent, agent_get
from audit.log import audit_record
from audit.models import AuditVerb
from releases.configuration import config_for_run, config_of_version
from releases.models import Release
from releases.prompts import prompt_render
from releases.services import release_production
from runs.kernel.leases import lease_kept
from runs.kernel.limits import limit_reached, run_spent
from runs.kernel.model_step import model_step
from runs.kernel.stepping import chaining, claim, commit, dead_letter_after_crash, kept_next_step
from runs.kernel.tool_step import tool_step
from runs.kernel.transitions import (
    dead_letter,
    enqueue_next_step,
    fail,
    park_for_human,
    run_requeue,
)
from runs.models import ACTIVE_STATES, DeadLetter, DeadLetterStatus, Run, RunPurpose

log = logging.getLogger(__name__)

# A step whose worker died this many times is not tried again: the run is dead-lettered
# with an internal_error instead of crashing workers forever.
MAX_STEP_ATTEMPTS = 3


# --- submitting ----------------------------------------------------------------------------


class RunInputInvalid(Exception):
    """The submission was refused; nothing was created."""

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class IdempotencyConflict(Exception):
    """The idempotency key was used before for a different request."""


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)


def _request_hash(agent_name: str, run_input: Any) -> str:
    return hashlib.sha256(_canonical_json([agent_name, run_input]).encode()).hexdigest()


def run_submit(
    *,
    agent_name: str,
    run_input: Any,
    submitted_by: User | AnonymousUser | None = None,
    idempotency_key: str | None = None,
) -> tuple[Run, bool]:
    """Validate and queue a run; return it and whether it was created.

    With an idempotency key, a repeated submission returns the run the key created first,
    provided the request is the same; a different request under the same key is refused.
    Raises RunInputInvalid (nothing created) or IdempotencyConflict.
    """
    agent = _agent_or_invalid(agent_name)
    validated = _input_validated(agent, run_input)
    if idempotency_key is not None and not (1 <= len(idempotency_key) <= 200):
        raise RunInputInvalid("the idempotency key must be 1 to 200 characters")

    user = submitted_by if submitted_by is not None and submitted_by.is_authenticated else None
    request_hash = _request_hash(agent.name, run_input)
    if idempotency_key is not None:
        existing = _run_for_key(user, idempotency_key, request_hash)
        if existing is not None:
            return existing, False
    try:
        with transaction.atomic():
            run = _run_create(agent, validated, run_input, user, idempotency_key, request_hash)
    except IntegrityError:
        # Two submissions with the same key raced; the other one won.
        existing = _run_for_key(user, idempotency_key, request_hash) if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    return run, True


def run_submit_from_page(
    *, agent_name: str, run_input: Any, submitted_by: User | AnonymousUser
) -> Run:
    """Queue a run from the submit page: the agent's ``prepare_input`` first, then the run.

    Both in one transaction: the hook may write (the example files the ticket there), and
    a run refused after it rolls that back. Raises RunInputInvalid (nothing written).
    """
    agent = _agent_or_invalid(agent_name)
    with transaction.atomic():
        if agent.prepare_input is not None:
            run_input = dict(agent.prepare_input(_input_validated(agent, run_input)))
        run, _ = run_submit(agent_name=agent.name, run_input=run_input, submitted_by=submitted_by)
    return run


def _agent_or_invalid(agent_name: str) -> Agent:
    try:
        return agent_get(agent_name)
    except UnknownAgent as exc:
        raise RunInputInvalid(str(exc)) from None


def _input_validated(agent: Agent, run_input: Any) -> BaseModel:
    """The input checked against the agent's schema and the size limit, or RunInputInvalid."""
    if not isinstance(run_input, dict):
        raise RunInputInvalid("input must be a JSON object")
    size = len(_canonical_json(run_input).encode())
    if size > settings.AGENTDESK_MAX_INPUT_BYTES:
        raise RunInputInvalid(
            f"input is {size} bytes; the limit is {settings.AGENTDESK_MAX_INPUT_BYTES} bytes"
        )
    try:
        return agent.input_schema.model_validate(run_input)
    except ValidationError as exc:
        raise RunInputInvalid(
            f"input does not match the {agent.name!r} agent's input schema",
            details=json.loads(exc.json(include_url=False, include_context=False)),
        ) from None


def _run_for_key(user: Any, key: str, request_hash: str) -> Run | None:
    existing = (
        Run.objects.select_related("release").filter(submitted_by=user, idempotency_key=key).first()
    )
    if existing is not None and existing.request_hash != request_hash:
        raise IdempotencyConflict(
            f"the idempotency key {key!r} was already used for a different request "
            f"(run {existing.id})"
        )
    return existing


def run_sandbox_submit(
    *, release: Release, run_input: Any, purpose: RunPurpose, submitted_by: User | None = None
) -> Run:
    """Queue a sandboxed run (an eval's example, a shadow) of ``release`` on commit.

    Nothing it does acts on the world (runs.kernel.sandbox). Raises RunInputInvalid
    (nothing created).
    """
    if purpose == RunPurpose.LIVE:
        raise ValueError("a sandboxed run is an eval or a shadow run")
    agent = _agent_or_invalid(release.agent_name)
    validated = _input_validated(agent, run_input)
    with transaction.atomic():
        return _run_create(
            agent,
            validated,
            run_input,
            submitted_by,
            None,
            _request_hash(agent.name, run_input),
            release=release,
            purpose=purpose,
        )


def _run_create(
    agent: Agent,
    validated: Any,
    run_input: dict[str, Any],
    user: Any,
    idempotency_key: str | None,
    request_hash: str,
    *,
    release: Release | None = None,
    purpose: RunPurpose = RunPurpose.LIVE,
) -> Run:
    # The run keeps the release production points at now to its end, whatever moves
    # later: its system prompt is rendered once (the checkpoint carries its text, and
    # every step records run.prompt_version), and its configuration is the release's.
    if release is None:
        release = release_production(agent_name=agent.name)
    prompt, config_version = release.prompt_version, release.config_version
    # Secrets in the input (a key pasted into a ticket, a card number) are redacted before
    # the first prompt is built and before anything is stored; the request hash above is
    # of the submission as sent, so an idempotent retry still matches.
    messages = redact_value(
        [
            {
                "role": "system",
                "content": prompt_render(agent=agent, version=prompt, validated_input=validated),
            },
            {"role": "user", "content": agent.render_input(validated)},
        ]
    )
    run = Run.objects.create(
        agent_name=agent.name,
        release=release,
        config_version=config_version,
        input=redact_value(run_input),
        trace_id=uuid.uuid4().hex,
        prompt_version=prompt.ref,
        # The model the run starts with: its first task kind's primary model in its version
        # (each step records the one that served it).
        model=config_of_version(version=config_version, agent=agent)
        .tier(agent.task_kinds[0])[0]
        .model,
        checkpoint={"messages": messages, "pending_actions": []},
        submitted_by=user,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        purpose=purpose,
    )
    audit_record(
        actor=user,
        verb=AuditVerb.RUN_SUBMITTED,
        object_type="run",
        object_id=str(run.id),
        after={
            "state": run.state,
            "agent": agent.name,
            "release": release.number,
            "prompt_version": run.prompt_version,
            "config_version": config_version.number,
            **({"purpose": purpose} if purpose != RunPurpose.LIVE else {}),
        },
        trace_id=run.trace_id,
    )
    enqueue_next_step(run)
    run.save(update_fields=["enqueued_at"])
    with trace_context(run.trace_id):
        log.info("run %s submitted for agent %s", run.id, agent.name)
    return run


# --- stepping ------------------------------------------------------------------------------


def run_step_execute(*, run_id: str, seq: int, chain_s: float = 0) -> None:
    """Execute step ``seq`` of a run, if it is still the run's next step.

    ``chain_s`` > 0 (the step task passes AGENTDESK_STEP_CHAIN_S): go on with the run's
    following steps here for up to that many seconds, as long as each is due at once
    (``runs.kernel.stepping.chaining``). 0: this one step only.
    """
    run = claim(run_id, seq)
    if run is None:
        return
    # The heartbeat renews the lease while this task works, whichever of its chained
    # steps holds it: only a dead worker's lease expires (runs.kernel.leases).
    with lease_kept(run), chaining(chain_s):
        while True:
            assert run.lease_token is not None
            lease = run.lease_token
            with trace_context(run.trace_id):
                try:
                    _step(run, seq)
                except (OperationalError, InterfaceError):
                    # The database itself is in trouble: nothing can be recorded now. The
                    # lease expires and the sweeper tries the step again.
                    raise
                except Exception as exc:
                    log.exception("step %s crashed", seq)
                    dead_letter_after_crash(run, seq, exc)
                    return
            if not kept_next_step(run) or run.lease_token == lease:
                return  # ended, parked, deferred, handed to the broker, or our lease lost
            seq = run.next_seq  # the commit kept the next step for this worker


def _step(run: Run, seq: int) -> None:
    agent = agent_get(run.agent_name)
    limits = config_for_run(run=run, agent=agent).limits
    pending = run.checkpoint.get("pending_actions", [])
    if run.step_attempts > MAX_STEP_ATTEMPTS:
        crashed = error_payload(
            ErrorClass.INTERNAL_ERROR,
            f"step {seq} was started {run.step_attempts - 1} times and never finished; "
            "see the worker logs for this trace id",
        )
        commit(run, seq, lambda r, _: dead_letter(r, crashed), recorded=False)
    elif exceeded := limit_reached(run_spent(run), limits, about_to_call_tool=bool(pending)):
        on_limit = park_for_human if limits.on_exceeded == OnLimit.ESCALATE else fail
        commit(run, seq, lambda r, _: on_limit(r, exceeded), recorded=False)
    elif pending:
        tool_step(run, seq, agent, pending[0])
    else:
        model_step(run, seq, agent)


# --- recovery --------------------------------------------------------------------------------


def runs_recover_stalled(*, limit: int = 500) -> int:
    """Re-enqueue active runs whose step was lost; return how many.

    A step is lost when its worker died holding the lease (the lease expired: nothing
    renews it any more), or when its message never reached a worker (enqueued longer ago
    than ``AGENTDESK_STEP_REDELIVER_S``, not claimed). The second wait is its own setting,
    longer than the lease: a message that is merely waiting in a busy queue must not be
    sent again every sweep.
    Re-enqueueing is harmless if the step was not lost after all: the claim refuses a
    duplicate.
    """
    now = timezone.now()
    redeliver = timedelta(seconds=settings.AGENTDESK_STEP_REDELIVER_S)
    stalled = (
        Q(lease_token__isnull=False, lease_expires_at__lt=now)
        | Q(lease_token__isnull=True, enqueued_at__lt=now - redeliver)
        | Q(lease_token__isnull=True, enqueued_at__isnull=True)
    )
    ids = list(
        Run.objects.filter(Q(state__in=ACTIVE_STATES) & stalled)
        .order_by("enqueued_at")
        .values_list("pk", flat=True)[:limit]
    )
    recovered = 0
    for run_id in ids:
        with transaction.atomic():
            run = (
                Run.objects.select_for_update(skip_locked=True)
                .filter(Q(pk=run_id) & Q(state__in=ACTIVE_STATES) & stalled)
                .first()
            )
            if run is None:
                continue
            with trace_context(run.trace_id):
                log.warning("run %s stalled at step %s; re-enqueued", run.id, run.next_seq)
            # The expired lease is dropped: a worker that is merely slow, not dead, finds
            # its lease gone at commit and discards its result.
            run.lease_token = None
            run.lease_expires_at = None
            enqueue_next_step(run)
            run.save(update_fields=["lease_token", "lease_expires_at", "enqueued_at", "updated_at"])
            recovered += 1
    return recovered


# --- dead letters ----------------------------------------------------------------------------


class DeadLetterResolved(Exception):
    """Someone else requeued or discarded this dead letter first."""


def _open_letter(letter_id: int) -> DeadLetter:
    letter = DeadLetter.objects.select_for_update().filter(pk=letter_id).first()
    if letter is None:
        raise DeadLetter.DoesNotExist(f"no dead letter {letter_id}")
    if letter.status != DeadLetterStatus.OPEN:
        who = letter.resolved_by.get_username() if letter.resolved_by else "someone"
        raise DeadLetterResolved(
            f"this dead letter was already {letter.status} by {who} at "
            f"{letter.resolved_at:%Y-%m-%d %H:%M:%S} UTC"
        )
    return letter


def _resolve(letter: DeadLetter, status: DeadLetterStatus, actor: User | None) -> None:
    letter.status = status
    letter.resolved_at = timezone.now()
    letter.resolved_by = actor
    letter.save(update_fields=["status", "resolved_at", "resolved_by"])
    audit_record(
        actor=actor,
        verb=AuditVerb(f"dead_letter.{status}"),
        object_type="dead_letter",
        object_id=str(letter.pk),
        before={"status": DeadLetterStatus.OPEN},
        after={"status": status, "run": str(letter.run_id)},
        trace_id=letter.run.trace_id,
    )


def dead_letter_requeue(*, letter_id: int, actor: User | None) -> Run:
    """Resume a dead-lettered run from its last checkpoint (never from the start).

    Completed steps and side effects stay done: the run continues at its next step with
    a fresh fallback chain and a fresh deadline.
    """
    with transaction.atomic():
        letter = _open_letter(letter_id)
        run = Run.objects.select_for_update().get(pk=letter.run_id)
        _resolve(letter, DeadLetterStatus.REQUEUED, actor)
        run_requeue(run, actor=actor)
        run.save()
    return run


def dead_letter_discard(*, letter_id: int, actor: User | None) -> DeadLetter:
    """Give up on a dead letter; the run stays dead-lettered, the letter leaves the list."""
    with transaction.atomic():
        letter = _open_letter(letter_id)
        _resolve(letter, DeadLetterStatus.DISCARDED, actor)
    return letter
