"""Circuit breakers per model endpoint and per tool, shared through the database.

A dependency that keeps failing (a model endpoint that answers 500s, a tool whose backend
is down) should not be hammered by every worker until each run has spent its retries on
it. A breaker counts the failures of one endpoint or tool, timeouts included; once it
has seen ``AGENTDESK_BREAKER_FAILURES`` of them within ``AGENTDESK_BREAKER_WINDOW_S``
seconds, or ``AGENTDESK_BREAKER_CONSECUTIVE`` in a row without a success between them
however slowly they came, it *opens*, and calls fail fast (``CircuitOpen``) so the caller
moves on to its fallback chain. (The second rule is for failures that are slow by nature:
calls that hang for their whole timeout come at most one per timeout per caller, and
two workers whose model calls all hung for 30 s never saw 5 failures in 60 s.) Each
kind of breaker (``model``, ``tool``) may have thresholds of its own
(``AGENTDESK_BREAKER_MODEL_FAILURES`` ...), see ``breaker_thresholds``. After
``AGENTDESK_BREAKER_COOLDOWN_S`` seconds it goes *half open*: exactly one caller is let
through as a probe. The probe's success *closes* the breaker; its failure
opens it again for another cooldown.

The state is a ``CircuitBreaker`` row, not process memory, because a breaker must hold for
every worker process on every host: a breaker per process would let each of a hundred
workers find out for itself, N failures each. The costs stay small:

- ``breaker_allow`` is one SELECT while the breaker is closed (and no row exists until the
  first failure), and a compare-and-set UPDATE only when a probe may start.
- ``breaker_record_success`` costs nothing in the usual case: ``breaker_allow`` says
  whether the breaker was closed with no failure counted, and then a success has nothing
  to reset. Otherwise it is one SELECT, and a write only when there is something to change.
- ``breaker_record_failure`` locks the row in a short transaction.

No function here keeps a transaction open across the caller's work: each transition is its
own short transaction, with its audit event (invariant 7). On SQLite (the embedded mode)
``select_for_update`` does nothing, but the IMMEDIATE transactions of that mode take the
write lock at BEGIN, so writers are serialized and the same logic holds.

Times are the workers' clocks (``timezone.now()``), like the runs' leases: hosts are
expected to keep time with NTP; a skew of a second moves a cooldown by a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit.log import audit_record
from audit.models import AuditVerb
from runs.models import BreakerState, CircuitBreaker

WORKER = "worker"  # the actor label of the audit events: workers change breakers on their own
NAME_MAX_LENGTH = CircuitBreaker._meta.get_field("name").max_length or 120
ERROR_CLASS_MAX_LENGTH = CircuitBreaker._meta.get_field("last_error_class").max_length or 40


class CircuitOpen(Exception):
    """The breaker ``name`` is open: do not call the dependency, take the fallback.

    ``retry_at`` is when a call may next be let through as a probe: the end of the
    cooldown, or, while another caller's probe is under way, when that probe counts as
    dead. It is a hint for the caller (and for the model, for a tool); a call at that time
    is not guaranteed to be the probe, since another worker may get there first.
    """

    def __init__(self, *, name: str, retry_at: datetime) -> None:
        super().__init__(f"circuit breaker {name} is open until {retry_at.isoformat()}")
        self.name = name
        self.retry_at = retry_at


def model_breaker_name(endpoint: str) -> str:
    """The breaker of a model endpoint, by its alias ("default", "backup").

    Per endpoint rather than per model: an endpoint that is down is down for every model
    it serves, and a model of another endpoint is the fallback to try.
    """
    return _checked(f"model:{endpoint}")


def tool_breaker_name(tool: str) -> str:
    """The breaker of a tool, by its registered name."""
    return _checked(f"tool:{tool}")


def _checked(name: str) -> str:
    if len(name) > NAME_MAX_LENGTH:
        raise ValueError(f"breaker name longer than {NAME_MAX_LENGTH} characters: {name!r}")
    return name


@dataclass(frozen=True)
class Thresholds:
    """When a breaker opens: ``failures`` within ``window_s`` seconds, or ``consecutive``."""

    failures: int
    window_s: float
    consecutive: int


def breaker_thresholds(name: str) -> Thresholds:
    """The thresholds of breaker ``name``: its kind's settings, else the general ones.

    The kind is the name's prefix (``model:default`` is a ``model`` breaker); a setting
    ``AGENTDESK_BREAKER_<KIND>_<FIELD>`` left unset (None) falls back to
    ``AGENTDESK_BREAKER_<FIELD>``. Read on every failure, not cached: tests and a process
    reading new settings see them at once.
    """
    kind = name.split(":", 1)[0].upper()

    def pick(field: str) -> Any:
        value = getattr(settings, f"AGENTDESK_BREAKER_{kind}_{field}", None)
        return value if value is not None else getattr(settings, f"AGENTDESK_BREAKER_{field}")

    return Thresholds(
        failures=int(pick("FAILURES")),
        window_s=float(pick("WINDOW_S")),
        consecutive=int(pick("CONSECUTIVE")),
    )


def _cooldown() -> timedelta:
    return timedelta(seconds=settings.AGENTDESK_BREAKER_COOLDOWN_S)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _snapshot(breaker: CircuitBreaker) -> dict[str, Any]:
    """The breaker's state for an audit event (JSON: times as ISO strings)."""
    return {
        "state": breaker.state,
        "failure_count": breaker.failure_count,
        "consecutive_failures": breaker.consecutive_failures,
        "opened_at": _iso(breaker.opened_at),
        "probe_started_at": _iso(breaker.probe_started_at),
        "last_error_class": breaker.last_error_class,
    }


def _audit(*, name: str, verb: AuditVerb, before: dict[str, Any], after: dict[str, Any]) -> None:
    audit_record(
        actor=None,
        actor_label=WORKER,
        verb=verb,
        object_type="breaker",
        object_id=name,
        before=before,
        after=after,
    )


# The read that every model and tool call makes, written out: building it with the ORM
# cost more than running it: 0.47 ms a call through the ORM, 0.2 ms like this (measured
# on the project's 2-core machine, PostgreSQL on loopback).
_READ_STATE = (
    'SELECT "state", "consecutive_failures", "opened_at", "probe_started_at" '
    f'FROM "{CircuitBreaker._meta.db_table}" WHERE "name" = %s'
)


def _moment(value: datetime | str | None) -> datetime | None:
    """A time column as read without the ORM: SQLite's are naive (UTC), or even text."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value


def breaker_allow(*, name: str) -> bool:
    """Let a call through, or raise ``CircuitOpen``; True if the breaker is clean.

    Clean: no row, or closed with no failure counted (``consecutive_failures`` is never
    below ``failure_count``: a success resets both, the window only the latter). Pass it
    on to ``breaker_record_success`` (``was_clean``), which then needs no query.

    1. Read the state (one SELECT). No row or closed: allowed; this is the usual case.
    2. Open within its cooldown, or half open with a live probe: ``CircuitOpen``.
    3. Open past its cooldown, or half open with a probe a cooldown old or more (its worker
       died, or it never reported): try to become the probe with a compare-and-set UPDATE
       whose WHERE repeats the condition. Of any number of callers on any number of hosts,
       exactly one UPDATE matches the row; it is the probe and returns, and the others get
       ``CircuitOpen``. The open → half-open transition and its audit event commit
       together, before the caller's work starts.
    """
    with connection.cursor() as cursor:
        cursor.execute(_READ_STATE, [name])
        row = cursor.fetchone()
    if row is None:
        return True
    state, consecutive_failures, opened_at, probe_started_at = row
    if state == BreakerState.CLOSED:
        return not consecutive_failures
    opened_at, probe_started_at = _moment(opened_at), _moment(probe_started_at)
    now = timezone.now()
    cooldown = _cooldown()
    cutoff = now - cooldown
    if state == BreakerState.OPEN:
        if opened_at is not None and opened_at > cutoff:
            raise CircuitOpen(name=name, retry_at=opened_at + cooldown)
        with transaction.atomic():
            # An open row without opened_at (edited by hand) counts as past its cooldown.
            won = (
                CircuitBreaker.objects.filter(name=name, state=BreakerState.OPEN)
                .filter(Q(opened_at__isnull=True) | Q(opened_at__lte=cutoff))
                .update(state=BreakerState.HALF_OPEN, probe_started_at=now, updated_at=now)
            )
            if won:
                _audit(
                    name=name,
                    verb=AuditVerb.BREAKER_HALF_OPENED,
                    before={"state": BreakerState.OPEN.value, "opened_at": _iso(opened_at)},
                    after={"state": BreakerState.HALF_OPEN.value, "probe_started_at": _iso(now)},
                )
    else:
        if probe_started_at is not None and probe_started_at > cutoff:
            raise CircuitOpen(name=name, retry_at=probe_started_at + cooldown)
        # The last probe never reported: not a change of state, so no audit event; its
        # successor's outcome closes or reopens the breaker as usual.
        won = (
            CircuitBreaker.objects.filter(name=name, state=BreakerState.HALF_OPEN)
            .filter(Q(probe_started_at__isnull=True) | Q(probe_started_at__lte=cutoff))
            .update(probe_started_at=now, updated_at=now)
        )
    if not won:
        # Another caller became the probe a moment ago.
        raise CircuitOpen(name=name, retry_at=now + cooldown)
    return False


def breaker_record_success(*, name: str, was_clean: bool = False) -> None:
    """Record a successful call: a half-open breaker closes, a closed one forgets failures.

    A success resets the count, so the breaker opens on failures that come without a
    success between them (within the window), not on a steady trickle among successes.
    ``was_clean`` (what ``breaker_allow`` returned for this call): the breaker was closed
    with nothing counted when the call started, so there is nothing to reset and no query
    is made, the usual case. Failures other callers counted while this call was under way
    stay counted until the next success that starts after them: a step's worth of delay
    in forgetting them, in exchange for a query less on every call.
    A success while the breaker is open (a call let through before it opened) changes
    nothing: only the probe decides when the breaker closes.
    """
    if was_clean:
        return
    row = (
        CircuitBreaker.objects.filter(name=name)
        .values_list("state", "consecutive_failures")
        .first()
    )
    if row is None:
        return
    state, consecutive_failures = row
    if state == BreakerState.CLOSED:
        if consecutive_failures:
            # Filtered on the state and the count: a breaker another worker has opened since
            # the SELECT stays open.
            CircuitBreaker.objects.filter(
                name=name, state=BreakerState.CLOSED, consecutive_failures__gt=0
            ).update(
                failure_count=0,
                consecutive_failures=0,
                window_started_at=None,
                updated_at=timezone.now(),
            )
        return
    if state != BreakerState.HALF_OPEN:
        return
    with transaction.atomic():
        breaker = CircuitBreaker.objects.select_for_update().filter(name=name).first()
        if breaker is None or breaker.state != BreakerState.HALF_OPEN:
            return  # another worker's probe already decided
        before = _snapshot(breaker)
        breaker.state = BreakerState.CLOSED
        breaker.failure_count = 0
        breaker.consecutive_failures = 0
        breaker.window_started_at = None
        breaker.opened_at = None
        breaker.probe_started_at = None
        breaker.save(
            update_fields=[
                "state",
                "failure_count",
                "consecutive_failures",
                "window_started_at",
                "opened_at",
                "probe_started_at",
                "updated_at",
            ]
        )
        _audit(name=name, verb=AuditVerb.BREAKER_CLOSED, before=before, after=_snapshot(breaker))


def breaker_record_failure(*, name: str, error_class: str) -> None:
    """Record a failed call, opening the breaker when the threshold is reached.

    1. Lock the row (creating it on the first failure ever; of two workers creating it at
       once, the loser's INSERT fails on the unique name and it locks the winner's row).
    2. Closed: count the failure in the current window and in the run of failures since
       the last success. The window starts at the first failure counted and lasts
       ``window_s``; a failure after it starts a new window with a count of one. At
       ``failures`` in the window, or ``consecutive`` in a row, the breaker opens
       (``breaker_thresholds``: the breaker kind's settings).
    3. Half open: the probe failed; open again with a fresh ``opened_at``, so the next probe
       waits a whole cooldown.
    4. Open: a call let through before the breaker opened has failed too; it is noted as
       the last failure but does not extend the cooldown.
    """
    now = timezone.now()
    error_class = str(error_class)[:ERROR_CLASS_MAX_LENGTH]
    with transaction.atomic():
        breaker = _locked(name)
        before = _snapshot(breaker)
        breaker.last_failure_at = now
        breaker.last_error_class = error_class
        opened = False
        if breaker.state == BreakerState.CLOSED:
            limits = breaker_thresholds(name)
            window = timedelta(seconds=limits.window_s)
            if breaker.window_started_at is None or now - breaker.window_started_at > window:
                breaker.failure_count = 1
                breaker.window_started_at = now
            else:
                breaker.failure_count += 1
            breaker.consecutive_failures += 1
            opened = (
                breaker.failure_count >= limits.failures
                or breaker.consecutive_failures >= limits.consecutive
            )
        elif breaker.state == BreakerState.HALF_OPEN:
            opened = True
        if opened:
            breaker.state = BreakerState.OPEN
            breaker.opened_at = now
            breaker.probe_started_at = None
        breaker.save()
        if opened:
            _audit(
                name=name, verb=AuditVerb.BREAKER_OPENED, before=before, after=_snapshot(breaker)
            )


def _locked(name: str) -> CircuitBreaker:
    """The breaker's row, locked for this transaction; created (closed) if missing."""
    breaker = CircuitBreaker.objects.select_for_update().filter(name=name).first()
    if breaker is not None:
        return breaker
    try:
        # A savepoint: a lost race must not break the caller's transaction.
        with transaction.atomic():
            return CircuitBreaker.objects.create(name=name)
    except IntegrityError:
        # Another worker created it since our SELECT; its INSERT has committed (ours waited
        # for it), so the row is there to lock.
        return CircuitBreaker.objects.select_for_update().get(name=name)


def breaker_states() -> list[dict[str, Any]]:
    """Every breaker that has ever seen a failure, for the breakers page, by name.

    ``retry_at`` is when the next probe may start: the end of the cooldown while open, the
    moment the current probe counts as dead while half open, None while closed.
    ``retry_due`` says that moment has passed (the next call will be the probe).
    """
    cooldown = _cooldown()
    now = timezone.now()
    states = []
    for breaker in CircuitBreaker.objects.order_by("name"):
        limits = breaker_thresholds(breaker.name)
        retry_at: datetime | None = None
        if breaker.state == BreakerState.OPEN and breaker.opened_at is not None:
            retry_at = breaker.opened_at + cooldown
        elif breaker.state == BreakerState.HALF_OPEN and breaker.probe_started_at is not None:
            retry_at = breaker.probe_started_at + cooldown
        states.append(
            {
                "name": breaker.name,
                "state": breaker.state,
                "failure_count": breaker.failure_count,
                "threshold": limits.failures,
                "window_s": limits.window_s,
                "consecutive_failures": breaker.consecutive_failures,
                "consecutive_threshold": limits.consecutive,
                "opened_at": breaker.opened_at,
                "probe_started_at": breaker.probe_started_at,
                "retry_at": retry_at,
                "retry_due": retry_at is not None and retry_at <= now,
                "last_failure_at": breaker.last_failure_at,
                "last_error_class": breaker.last_error_class,
            }
        )
    return states
