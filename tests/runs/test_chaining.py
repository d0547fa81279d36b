"""Chained steps: a step task goes on with its run's next steps while they are due at once.

The step task passes AGENTDESK_STEP_CHAIN_S to ``run_step_execute``; these tests call it
directly with ``chain_s``, in one transaction (pytest-django's ``db``), and count the step
messages the commits would have sent with ``django_capture_on_commit_callbacks``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from freezegun import freeze_time

from examples.support.seed import seed_shop
from runs import services
from runs.kernel import stepping
from runs.models import Action, Run, RunState, Step
from tests.processes import Simulator
from tests.runs.factories import drive, seeded_ticket_input

pytestmark = pytest.mark.django_db

REFUND_TICKET = "T-0002"  # lookup, policy check, refund, reply, answer: 9 steps
# A model step that calls a read-only tool (the lookup, the policy check) makes the call at
# once and records it with itself: one call of run_step_execute takes both steps.
FIRST_CALL_STEPS = 2


@pytest.fixture
def shop(db: None) -> None:
    seed_shop()


def _submit() -> Run:
    run, _ = services.run_submit(agent_name="support", run_input=seeded_ticket_input(REFUND_TICKET))
    return run


def _steps(run: Run) -> list[tuple[int, str, str]]:
    return [
        (step.seq, step.kind, step.action.get("tool") or step.action.get("type", ""))
        for step in Step.objects.filter(run=run).order_by("seq")
    ]


def test_a_chained_call_takes_every_step_due_now_and_sends_no_message(
    shop: None, model_endpoint: Simulator, django_capture_on_commit_callbacks: Any
) -> None:
    chained = _submit()
    with django_capture_on_commit_callbacks() as sent:
        services.run_step_execute(run_id=str(chained.id), seq=0, chain_s=30)

    chained.refresh_from_db()
    assert chained.state == RunState.SUCCEEDED
    assert sent == []  # no step went through the broker
    assert _steps(chained) == [
        (0, "model", "tool_calls"),
        (1, "tool", "lookup_order"),
        (2, "model", "tool_calls"),
        (3, "tool", "search_refund_policy"),
        (4, "model", "tool_calls"),
        (5, "tool", "issue_refund"),
        (6, "model", "tool_calls"),
        (7, "tool", "send_reply"),
        (8, "model", "final_answer"),
    ]
    assert (chained.lease_token, chained.lease_expires_at, chained.step_attempts) == (None, None, 0)


def test_without_chaining_a_call_takes_one_step_and_sends_the_next(
    shop: None, model_endpoint: Simulator, django_capture_on_commit_callbacks: Any
) -> None:
    run = _submit()
    with django_capture_on_commit_callbacks() as sent:
        services.run_step_execute(run_id=str(run.id), seq=0, chain_s=0)

    run.refresh_from_db()
    assert (run.next_seq, run.lease_token, len(sent)) == (FIRST_CALL_STEPS, None, 1)


def test_past_the_chain_time_the_next_step_goes_to_the_broker(
    shop: None, model_endpoint: Simulator, django_capture_on_commit_callbacks: Any
) -> None:
    run = _submit()
    with django_capture_on_commit_callbacks() as sent:
        # The chain time is over before the first step commits.
        services.run_step_execute(run_id=str(run.id), seq=0, chain_s=1e-9)

    run.refresh_from_db()
    assert (run.next_seq, run.lease_token, run.state, len(sent)) == (
        FIRST_CALL_STEPS,
        None,
        "running",
        1,
    )


def test_a_worker_that_dies_holding_a_kept_step_leaves_it_to_the_sweeper(
    shop: None, model_endpoint: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kept step's lease expires like any claim's; the sweeper sends it again."""
    run = _submit()
    step = services._step
    taken: list[int] = []

    def dies_on_the_second_step(run: Run, seq: int) -> None:
        taken.append(seq)
        if len(taken) == 2:
            raise SystemExit("worker killed")  # not an Exception: nothing catches it
        step(run, seq)

    monkeypatch.setattr(services, "_step", dies_on_the_second_step)
    with pytest.raises(SystemExit):
        services.run_step_execute(run_id=str(run.id), seq=0, chain_s=30)
    monkeypatch.setattr(services, "_step", step)

    run.refresh_from_db()
    assert (run.next_seq, run.step_attempts, run.state) == (FIRST_CALL_STEPS, 1, RunState.RUNNING)
    assert run.lease_token is not None
    assert services.runs_recover_stalled() == 0  # the lease is live: it may still finish
    later = run.lease_expires_at + timedelta(seconds=1)
    with freeze_time(later):
        assert services.runs_recover_stalled() == 1
    run.refresh_from_db()
    assert run.lease_token is None

    finished = drive(run)
    assert finished.state == RunState.SUCCEEDED
    assert [seq for seq, _, _ in _steps(finished)] == list(range(finished.next_seq))


def test_a_step_that_crashes_in_its_commit_is_dead_lettered_with_the_run_as_it_was(
    shop: None, model_endpoint: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit rolled back: what it had done to the run in memory must not be saved by
    the dead letter (a reply appended to the conversation without its actions)."""
    run = _submit()
    redact = stepping._redact_checkpoint
    calls: list[int] = []

    def fails_on_the_second_commit(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        redact(*args)

    monkeypatch.setattr(stepping, "_redact_checkpoint", fails_on_the_second_commit)
    services.run_step_execute(run_id=str(run.id), seq=0, chain_s=30)

    run.refresh_from_db()
    assert run.state == RunState.DEAD_LETTERED
    assert run.error["class"] == "internal_error"
    # The second commit is model step 2's, with the policy check it made at once.
    assert "step 2 raised RuntimeError: disk full" in run.error["message"]
    assert run.next_seq == FIRST_CALL_STEPS == 2
    assert [seq for seq, _, _ in _steps(run)] == [0, 1]
    # The conversation as steps 0 and 1 left it: system, user, the assistant's lookup and
    # its result; not step 2's reply and policy text, which the failed commit had appended.
    assert [m["role"] for m in run.checkpoint["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
    ]
    assert run.checkpoint["pending_actions"] == []
    assert Action.objects.filter(run=run).count() == 1
    assert run.lease_token is None
    assert timezone.now() - run.finished_at < timedelta(minutes=1)
