"""Retries, the fallback chain, repair of malformed output, limits and dead letters.

Steps are driven in this process against the simulator over HTTP; a backoff's countdown
is not waited for (``drive`` runs the next step at once), which is what the test wants.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from examples.support.models import Handoff, Refund
from examples.support.seed import seed_shop
from reviews.models import ApprovalRequest, GoldenCandidate
from reviews.services.deciding import approval_approve, approval_reject
from runs import services
from runs.gateway.retrying import retry_delay
from runs.models import Action, ActionStatus, CircuitBreaker, DeadLetter, Run, RunState
from tests.processes import Simulator
from tests.runs.factories import drive, seeded_ticket_input

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("use_test_agents")]

REFUND_TICKET = "T-0002"


@pytest.fixture
def shop(db: None) -> None:
    seed_shop()


def _run(agent: str = "support", ticket: str = REFUND_TICKET) -> Run:
    return services.run_submit(agent_name=agent, run_input=seeded_ticket_input(ticket))[0]


def _trail(run: Run) -> list[tuple[str, str, str, int]]:
    return [(s.kind, s.route, s.error_class, s.attempt) for s in run.steps.order_by("seq")]


# --- retries ---------------------------------------------------------------------------


def test_transient_failures_back_off_exponentially_and_honour_retry_after(
    settings: Any,
) -> None:
    settings.AGENTDESK_RETRY_ATTEMPTS = 3
    settings.AGENTDESK_RETRY_MAX_WAIT_S = 20
    first = retry_delay(attempt=1, error_class="model_server_error")
    second = retry_delay(attempt=2, error_class="model_server_error")

    assert first is not None
    assert 0.5 <= first <= 1.0
    assert second is not None
    assert 1.0 <= second <= 1.5
    assert retry_delay(attempt=3, error_class="model_server_error") is None  # 3 attempts
    assert retry_delay(attempt=1, error_class="model_rate_limited", retry_after_s=7) >= 7
    assert retry_delay(attempt=1, error_class="model_rate_limited", retry_after_s=99) == 20
    assert retry_delay(attempt=1, error_class="tool_args_invalid") is None  # not transient
    assert retry_delay(attempt=1, error_class="model_refusal") is None


def test_failing_model_walks_the_whole_chain_then_the_rule_hands_off(
    shop: None, model_endpoint: Simulator
) -> None:
    model_endpoint.configure(server_error_rate=1.0)

    run = drive(_run())

    assert run.state == RunState.SUCCEEDED
    assert _trail(run) == [
        ("model", "gpt-4o-mini@default", "model_server_error", 1),
        ("model", "gpt-4o-mini@default", "model_server_error", 2),
        ("model", "gpt-4o-mini@default", "model_server_error", 3),
        ("model", "gpt-4o@default", "model_server_error", 1),
        ("model", "gpt-4o@default", "model_server_error", 2),  # 5th failure: breaker opens
        ("model", "rule", "", 1),  # the fallback model is skipped while its breaker is open
        ("tool", "", "", 1),
        ("model", "rule", "", 1),
    ]
    assert run.steps.get(seq=5).outcome["skipped_open_breakers"] == ["gpt-4o@default"]
    assert Handoff.objects.filter(idempotency_key__startswith=str(run.id)).count() == 1
    assert run.output.startswith("Rule-based fallback")


def test_model_calls_that_all_hang_open_the_breaker_on_timeouts_in_a_row(
    shop: None, model_endpoint: Simulator, settings: Any
) -> None:
    """Invariant 10: a hanging endpoint is given up on, not waited on by every run.

    Every call hangs past the SDK's timeout (real HTTP, the real openai SDK). The window
    is shorter than one timeout, so "N in a window" can never fire, as with 30 s timeouts
    against a 60 s window on two workers; "N in a row" does, at the third timeout.
    """
    settings.AGENTDESK_LLM_TIMEOUT_S = 0.3
    settings.AGENTDESK_BREAKER_WINDOW_S = 0.1
    settings.AGENTDESK_BREAKER_MODEL_CONSECUTIVE = 3
    model_endpoint.configure(hang_rate=1.0, hang_s=1)
    requests_before = model_endpoint.requests_taken()

    run = drive(_run())

    assert run.state == RunState.SUCCEEDED
    assert _trail(run) == [
        ("model", "gpt-4o-mini@default", "model_timeout", 1),
        ("model", "gpt-4o-mini@default", "model_timeout", 2),
        ("model", "gpt-4o-mini@default", "model_timeout", 3),  # third in a row: open
        ("model", "rule", "", 1),  # gpt-4o@default skipped: same endpoint, breaker open
        ("tool", "", "", 1),
        ("model", "rule", "", 1),
    ]
    assert run.steps.get(seq=3).outcome["skipped_open_breakers"] == ["gpt-4o@default"]
    breaker = CircuitBreaker.objects.get(name="model:default")
    assert (breaker.state, breaker.failure_count, breaker.consecutive_failures) == (
        "open",
        1,
        3,
    )
    assert breaker.last_error_class == "model_timeout"
    assert model_endpoint.requests_taken() - requests_before == 3  # no call after it opened
    assert AuditEvent.objects.filter(verb="breaker.opened", object_id="model:default").count() == 1


def test_without_the_row_rule_hanging_calls_never_open_the_breaker(
    shop: None, model_endpoint: Simulator, settings: Any
) -> None:
    """The control of the test above: the window rule alone lets every timeout through."""
    settings.AGENTDESK_LLM_TIMEOUT_S = 0.3
    settings.AGENTDESK_BREAKER_WINDOW_S = 0.1
    settings.AGENTDESK_BREAKER_MODEL_CONSECUTIVE = 100
    model_endpoint.configure(hang_rate=1.0, hang_s=1)
    requests_before = model_endpoint.requests_taken()

    run = drive(_run())

    assert [t[1:3] for t in _trail(run)[:6]] == [
        ("gpt-4o-mini@default", "model_timeout"),
        ("gpt-4o-mini@default", "model_timeout"),
        ("gpt-4o-mini@default", "model_timeout"),
        ("gpt-4o@default", "model_timeout"),
        ("gpt-4o@default", "model_timeout"),
        ("gpt-4o@default", "model_timeout"),
    ]
    # Both task kinds' tiers, three attempts on each of their two models: every one of
    # the twelve calls waited out its whole timeout, and the breaker never opened.
    timeouts = run.steps.filter(error_class="model_timeout").count()
    assert timeouts == 12
    assert model_endpoint.requests_taken() - requests_before == 12
    breaker = CircuitBreaker.objects.get(name="model:default")
    assert (breaker.state, breaker.failure_count, breaker.consecutive_failures) == (
        "closed",
        1,
        12,
    )


def test_a_recovered_model_is_used_again(shop: None, model_endpoint: Simulator) -> None:
    model_endpoint.configure(server_error_rate=1.0)
    run = _run()
    services.run_step_execute(run_id=str(run.id), seq=0)
    model_endpoint.configure(server_error_rate=0)

    run = drive(run)

    assert run.state == RunState.SUCCEEDED
    assert _trail(run)[:2] == [
        ("model", "gpt-4o-mini@default", "model_server_error", 1),
        ("model", "gpt-4o-mini@default", "", 2),
    ]


# --- refusals and malformed output ----------------------------------------------------------


def test_a_refusal_goes_straight_to_the_next_link(shop: None, model_endpoint: Simulator) -> None:
    model_endpoint.configure(refusal_rate=1.0)

    run = drive(_run())

    assert run.state == RunState.SUCCEEDED
    assert _trail(run)[:3] == [
        ("model", "gpt-4o-mini@default", "model_refusal", 1),
        ("model", "gpt-4o@default", "model_refusal", 1),
        ("model", "rule", "", 1),
    ]


def test_malformed_output_gets_one_repair_attempt_then_the_next_link(
    shop: None, model_endpoint: Simulator
) -> None:
    model_endpoint.configure(malformed_json_rate=1.0)

    run = drive(_run())

    assert _trail(run)[:5] == [
        ("model", "gpt-4o-mini@default", "", 1),  # malformed: the error is fed back
        ("tool", "", "tool_args_invalid", 1),
        ("model", "gpt-4o-mini@default", "model_output_invalid", 1),  # the repair failed
        ("tool", "", "tool_args_invalid", 1),
        ("model", "gpt-4o@default", "", 1),  # next link
    ]
    # Output that stays malformed on every link cannot finish the work: the run ends in a
    # defined state with a structured error rather than looping, or (the calls it is
    # forced into are hand-offs, malformed twice) waits for a person.
    assert run.state in (RunState.SUCCEEDED, RunState.FAILED, RunState.NEEDS_HUMAN)
    assert run.state == RunState.SUCCEEDED or run.error["class"] in (
        "budget_exceeded",
        "handoff_failed",
    )


# --- the end of the chain ---------------------------------------------------------------


def test_exhausted_chain_without_rule_or_human_is_dead_lettered(
    shop: None, model_endpoint: Simulator
) -> None:
    model_endpoint.configure(refusal_rate=1.0)

    run = drive(_run("bare"))

    assert run.state == RunState.DEAD_LETTERED
    assert run.error["class"] == "model_refusal"
    letter = DeadLetter.objects.get(run=run)
    assert (letter.status, letter.seq, letter.error) == ("open", 2, run.error)


def test_exhausted_chain_with_a_human_waits_for_one(shop: None, model_endpoint: Simulator) -> None:
    model_endpoint.configure(refusal_rate=1.0)

    run = drive(_run("humane"))

    assert run.state == RunState.NEEDS_HUMAN
    assert run.steps.last().route == "human"
    assert "every link of the fallback chain failed" in run.error["message"]
    assert not DeadLetter.objects.filter(run=run).exists()
    # The human is asked in the agent's escalation queue, with the error and the input.
    request = ApprovalRequest.objects.get(run=run)
    assert (request.kind, request.state, request.queue.slug) == ("run", "pending", "support")
    assert request.rule == "model_refusal"
    assert request.context["error"] == run.error
    assert request.context["input"] == run.input


def test_a_person_resumes_a_stuck_run_from_the_first_link(
    shop: None, model_endpoint: Simulator, reviewer: Any
) -> None:
    model_endpoint.configure(refusal_rate=1.0)
    run = drive(_run("humane"))
    request = ApprovalRequest.objects.get(run=run)
    model_endpoint.configure(refusal_rate=0.0)

    approval_approve(request_id=request.pk, user=reviewer, seen_hash=request.args_hash)
    run.refresh_from_db()
    assert (run.state, run.error, run.checkpoint["link"]) == (RunState.RUNNING, None, 0)
    run = drive(run)

    assert run.state == RunState.SUCCEEDED
    assert AuditEvent.objects.filter(verb="run.resumed", object_id=str(run.pk)).count() == 1


def test_a_person_ends_a_stuck_run_with_a_note(
    shop: None, model_endpoint: Simulator, reviewer: Any
) -> None:
    model_endpoint.configure(refusal_rate=1.0)
    run = drive(_run("humane"))
    request = ApprovalRequest.objects.get(run=run)

    approval_reject(request_id=request.pk, user=reviewer, feedback="Answered by phone.")

    run.refresh_from_db()
    assert run.state == RunState.FAILED
    assert run.error["class"] == "model_refusal"
    assert run.error["message"].endswith("ended by rita: Answered by phone.")
    assert not GoldenCandidate.objects.exists()  # no proposal to correct


def test_a_bug_in_the_runtime_path_dead_letters_the_run(
    shop: None, model_endpoint: Simulator
) -> None:
    model_endpoint.configure(refusal_rate=1.0)

    run = drive(_run("buggy"))

    assert run.state == RunState.DEAD_LETTERED
    assert run.error["class"] == "internal_error"
    assert "RuntimeError: the rule-based fallback has a bug" in run.error["message"]


def test_a_step_that_keeps_killing_its_worker_is_dead_lettered(
    shop: None, model_endpoint: Simulator
) -> None:
    run = _run()
    Run.objects.filter(pk=run.pk).update(step_attempts=services.MAX_STEP_ATTEMPTS)

    services.run_step_execute(run_id=str(run.id), seq=0)

    run.refresh_from_db()
    assert run.state == RunState.DEAD_LETTERED
    assert run.error["message"].startswith("step 0 was started 3 times and never finished")


# --- limits -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agent", "message"),
    [
        ("tight_steps", "the run reached its limit of 3 steps"),
        ("tight_tools", "the run reached its limit of 1 tool calls"),
        ("tight_tokens", "tokens of 3000"),
        ("tight_cost", "budget"),
        ("tight_deadline", "the run passed its deadline of 0 s"),
    ],
)
def test_each_limit_stops_a_run_that_would_pass_it(
    shop: None, model_endpoint: Simulator, agent: str, message: str
) -> None:
    run = drive(_run(agent))

    assert run.state == RunState.FAILED
    assert run.error["class"] == "budget_exceeded"
    assert message in run.error["message"]
    assert run.steps.count() <= 4


def test_a_limit_can_escalate_instead_of_failing(shop: None, model_endpoint: Simulator) -> None:
    run = drive(_run("tight_escalating"))

    assert run.state == RunState.NEEDS_HUMAN
    assert run.error["class"] == "budget_exceeded"
    assert ApprovalRequest.objects.get(run=run).rule == "budget_exceeded"


def test_a_person_resuming_a_run_stopped_by_a_limit_gives_it_the_limits_anew(
    shop: None, model_endpoint: Simulator, reviewer: Any
) -> None:
    run = drive(_run("tight_escalating"))  # max_steps=3
    steps_before = run.next_seq
    request = ApprovalRequest.objects.get(run=run)

    approval_approve(request_id=request.pk, user=reviewer, seen_hash=request.args_hash)
    run = drive(run)

    # Three more steps, then the limit stops it again and asks a person again: no loop.
    assert run.state == RunState.NEEDS_HUMAN
    assert run.next_seq == steps_before + 3
    assert ApprovalRequest.objects.filter(run=run).count() == 2
    assert ApprovalRequest.objects.filter(run=run, state="pending").count() == 1


def test_a_tool_over_its_rate_limit_waits_instead_of_running(
    shop: None, model_endpoint: Simulator
) -> None:
    first = drive(_run("rate_limited"))
    second = _run("rate_limited", ticket="T-0003")
    services.run_step_execute(run_id=str(second.id), seq=0)  # proposes lookup_order

    services.run_step_execute(run_id=str(second.id), seq=1)  # over 1/minute: deferred

    second.refresh_from_db()
    assert first.state == RunState.SUCCEEDED
    assert second.next_seq == 1
    assert second.steps.count() == 1
    assert second.enqueued_at > timezone.now() + timedelta(seconds=30)
    assert Action.objects.get(run=second).status == ActionStatus.PROPOSED


# --- dead letters: requeue and discard -------------------------------------------------------


def _dead_letter_after_refund(model_endpoint: Simulator) -> Run:
    """A refund run that dies right after its refund: the next model step keeps crashing."""
    run = _run()
    while not Action.objects.filter(
        run=run, tool="issue_refund", status=ActionStatus.SUCCEEDED
    ).exists():
        services.run_step_execute(run_id=str(run.id), seq=run.next_seq)
        run.refresh_from_db()
        assert not run.is_terminal
    Run.objects.filter(pk=run.pk).update(step_attempts=services.MAX_STEP_ATTEMPTS)
    services.run_step_execute(run_id=str(run.id), seq=run.next_seq)
    run.refresh_from_db()
    assert run.state == RunState.DEAD_LETTERED
    return run


def test_requeue_resumes_at_the_checkpoint_without_repeating_side_effects(
    shop: None, model_endpoint: Simulator, operator: Any
) -> None:
    run = _dead_letter_after_refund(model_endpoint)
    refunds = Refund.objects.count()
    steps_before = run.steps.count()
    letter = DeadLetter.objects.get(run=run)

    services.dead_letter_requeue(letter_id=letter.pk, actor=operator)
    run = drive(run)

    assert run.state == RunState.SUCCEEDED
    assert Refund.objects.count() == refunds
    assert Action.objects.filter(run=run, tool="issue_refund").count() == 1
    assert list(run.steps.values_list("seq", flat=True)) == list(range(run.next_seq))
    assert run.steps.count() > steps_before
    letter.refresh_from_db()
    assert (letter.status, letter.resolved_by) == ("requeued", operator)
    assert set(
        AuditEvent.objects.filter(object_id__in=[str(run.id), str(letter.pk)]).values_list(
            "verb", flat=True
        )
    ) >= {"dead_letter.requeued", "run.requeued"}


def test_the_second_person_to_resolve_a_dead_letter_is_told_who_did(
    shop: None, model_endpoint: Simulator, operator: Any
) -> None:
    run = _dead_letter_after_refund(model_endpoint)
    letter = DeadLetter.objects.get(run=run)
    services.dead_letter_discard(letter_id=letter.pk, actor=operator)

    with pytest.raises(services.DeadLetterResolved, match="already discarded by otto"):
        services.dead_letter_requeue(letter_id=letter.pk, actor=operator)

    run.refresh_from_db()
    assert run.state == RunState.DEAD_LETTERED
