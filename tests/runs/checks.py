"""Assertions shared by the tests that run many runs through real workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import Count

from examples.support.models import Handoff, Refund, Reply
from runs.models import TERMINAL_STATES, Action, ActionStatus, Run, RunState
from tests.conftest import wait_until

# Where a run rests: ended, or parked for a person (a verifier refused it, a hand-off
# failed), which no worker moves on.
RESTING_STATES = frozenset({*TERMINAL_STATES, RunState.NEEDS_HUMAN})


def terminal_count(run_ids: list[Any], states: frozenset[str] = TERMINAL_STATES) -> int:
    return Run.objects.filter(pk__in=run_ids, state__in=states).count()


def wait_for_all_to_end(
    run_ids: list[Any],
    *,
    timeout_s: float,
    what: str,
    meanwhile: Callable[[], object] | None = None,
    states: frozenset[str] = TERMINAL_STATES,
) -> None:
    """Poll until every run is in one of ``states`` (by default: has ended).

    ``meanwhile`` is called on every poll (a supervisor).
    """

    def ended() -> bool:
        if meanwhile is not None:
            meanwhile()
        return terminal_count(run_ids, states) == len(run_ids)

    wait_until(
        ended,
        timeout_s=timeout_s,
        what=what,
        describe=lambda: list(
            Run.objects.filter(pk__in=run_ids)
            .exclude(state__in=states)
            .values("id", "state", "next_seq", "lease_expires_at", "enqueued_at", "step_attempts")
        ),
    )


def assert_ended_cleanly(run_ids: list[Any], refunds_before: list[int]) -> list[Run]:
    """Every run ended with no gap or repeat in its steps, and every effect happened once.

    A refund is recorded under its issue_refund action's key, a cancellation's refund
    under "<cancel key>:refund", replies and hand-offs under their actions' keys.
    """
    runs = list(Run.objects.filter(pk__in=run_ids))
    unsuccessful = [r for r in runs if r.state != RunState.SUCCEEDED]
    assert all(r.error and r.error["class"] for r in unsuccessful), [r.error for r in unsuccessful]
    for run in runs:
        seqs = list(run.steps.order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(run.next_seq)), f"steps of {run.id} are {seqs}"
    succeeded = Action.objects.filter(run__in=run_ids, status=ActionStatus.SUCCEEDED)
    expected_refund_keys = {a.idempotency_key for a in succeeded.filter(tool="issue_refund")} | {
        f"{a.idempotency_key}:refund"
        for a in succeeded.filter(tool="cancel_order")
        if a.result["refunded_amount"] != "0.00"
    }
    new_refunds = Refund.objects.order_by().exclude(pk__in=refunds_before)
    assert sorted(new_refunds.values_list("idempotency_key", flat=True)) == sorted(
        expected_refund_keys
    )
    for model, tool in ((Reply, "send_reply"), (Handoff, "handoff_to_human")):
        keys = set(succeeded.filter(tool=tool).values_list("idempotency_key", flat=True))
        written = set(
            model.objects.filter(idempotency_key__in=keys).values_list("idempotency_key", flat=True)
        )
        assert written == keys
        written_by_runs = model.objects.filter(idempotency_key__regex=r"^[0-9a-f-]{36}:")
        assert written_by_runs.count() == len(keys)
    duplicated = Refund.objects.values("idempotency_key").annotate(n=Count("id")).filter(n__gt=1)
    assert list(duplicated) == []
    assert not Action.objects.filter(run__in=run_ids, status=ActionStatus.EXECUTING).exists()
    return runs
