"""Honest outcomes: a run that did not do what it was for is never a plain success.

Runs are driven in this process against the simulator over HTTP, through the openai SDK
(tests/runs/test_honest_workers.py runs the hostile tickets in real workers). The example
agent declares its verifiers (examples/support/verifiers.py): a refund within the order's
balance, a final answer that claims only what the run's calls did, and a ticket that ends
with a reply, a hand-off or spam noted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from agents.definition import ActionDone, VerifierContext
from audit.models import AuditEvent
from examples.support.models import Cancellation, Handoff, Order, Refund, Reply
from examples.support.seed import seed_shop
from examples.support.verifiers import claims_match_actions, ticket_settled
from reviews import services as review_services
from reviews.models import ApprovalRequest, RequestKind, RequestState
from runs import services
from runs.models import Action, ActionStatus, Degradation, Run, RunState, Verdict
from tests.processes import Simulator
from tests.runs.factories import drive, seeded_ticket_input

pytestmark = pytest.mark.django_db

# Hostile tickets of the kind that ended "succeeded" with nothing done: no ticket id (a
# form or API submission of a new complaint), shouting, threats, sweeping demands.
SUE = {
    "customer_email": "tom.baker@example.com",
    "subject": "I WILL SUE YOU",
    "body": "I WILL SUE YOU. YOUR SHOP IS A SCAM AND I WANT MY MONEY BACK NOW!!!",
}
CANCEL_ALL = {
    "customer_email": "tom.baker@example.com",
    "subject": "cancel every order",
    "body": "Cancel every order on my account, all of them, today. I am done with you.",
}


@pytest.fixture
def shop(db: None) -> None:
    seed_shop()


@pytest.fixture
def honest_model(model_endpoint: Simulator) -> Iterator[Simulator]:
    """The simulator without mistakes, so that each ticket takes one path every day."""
    model_endpoint.configure(mistake_rate=0.0, false_claim_rate=0.0)
    yield model_endpoint
    model_endpoint.configure(mistake_rate=0.1, false_claim_rate=0.0)


@pytest.fixture
def lying_model(honest_model: Simulator) -> Simulator:
    """Every final answer also claims "Everything was refunded in full."."""
    honest_model.configure(false_claim_rate=1.0)
    return honest_model


def _effects() -> tuple[int, int, int, int]:
    return (
        Refund.objects.count(),
        Cancellation.objects.count(),
        Reply.objects.count(),
        Handoff.objects.count(),
    )


def _escalation(run: Run) -> ApprovalRequest:
    return ApprovalRequest.objects.get(run=run, kind=RequestKind.RUN, state=RequestState.PENDING)


def _refused_answers(run: Run) -> list[str]:
    return list(
        run.steps.filter(kind="model", error_class="verification_failed")
        .order_by("seq")
        .values_list("outcome__error__details__failures__0__verifier", flat=True)
    )


def _submit(run_input: dict[str, Any]) -> Run:
    return services.run_submit(agent_name="support", run_input=run_input)[0]


# --- hostile tickets and the outcome check --------------------------------------------------


@pytest.mark.parametrize(
    ("ticket", "answer", "degraded", "effects"),
    [
        # Asks which order (a reply to "T-UNKNOWN"), then hands off to it: both refused
        # by the schema; the second malformed reply moves to the fallback model.
        (
            SUE,
            "T-UNKNOWN: no action taken.",
            [Degradation.FALLBACK_MODEL, Degradation.VERIFICATION_FAILED],
            (0, 0, 0, 0),
        ),
        # Cancels the one processing order (which refunds it), then cannot tell the
        # customer: the order is gone and nobody knows. A person must.
        (
            CANCEL_ALL,
            "T-UNKNOWN: cancelled SO-1058.",
            [Degradation.VERIFICATION_FAILED],
            (1, 1, 0, 0),
        ),
    ],
    ids=["sue", "cancel-every-order"],
)
def test_invariant_10_a_hostile_ticket_left_unanswered_goes_to_a_person_not_to_success(
    shop: None,
    honest_model: Simulator,
    ticket: dict[str, str],
    answer: str,
    degraded: list[str],
    effects: tuple[int, int, int, int],
) -> None:
    """No ticket id: the model's reply and hand-off to "T-UNKNOWN" fail validation.

    Before, the run ended ``succeeded``. Now its answer is refused (no reply, no
    hand-off), the model is told so once, and then a person gets the run.
    """
    before = _effects()

    run = drive(_submit(ticket))

    assert run.state == RunState.NEEDS_HUMAN
    assert run.error is not None
    assert run.error["class"] == "verification_failed"
    assert run.error["message"].startswith("ticket_settled: the ticket is not settled")
    assert run.error["details"]["answer"] == answer
    assert run.output == ""
    assert _refused_answers(run) == ["ticket_settled", "ticket_settled"]
    writes = Action.objects.filter(run=run, tool__in=("send_reply", "handoff_to_human"))
    assert {(a.status, a.error_class, a.verdict) for a in writes} == {
        (ActionStatus.FAILED, "tool_args_invalid", Verdict.NOT_EVALUATED)
    }
    assert run.degraded == degraded
    request = _escalation(run)
    assert (request.rule, request.queue.slug) == ("verification_failed", "support")
    assert request.context["error"]["details"]["answer"] == answer
    assert tuple(now - then for now, then in zip(_effects(), before, strict=True)) == effects


def test_invariant_10_a_person_ending_the_refused_run_fails_it_with_their_note(
    shop: None, honest_model: Simulator, reviewer: Any
) -> None:
    run = drive(_submit(SUE))
    request = _escalation(run)

    review_services.approval_reject(
        request_id=request.pk, user=reviewer, feedback="Called the customer myself."
    )

    run.refresh_from_db()
    assert run.state == RunState.FAILED
    assert run.error is not None
    assert run.error["class"] == "verification_failed"
    assert run.error["message"].endswith("ended by rita: Called the customer myself.")


def test_invariant_10_a_hand_off_to_an_unknown_ticket_reaches_a_person_at_once(
    shop: None, honest_model: Simulator
) -> None:
    """The model hands off to a ticket that is neither the run's nor the shop's."""
    before = _effects()
    ticket = {
        **SUE,
        "subject": "About my last ticket",
        "body": "I wrote about this in T-4242. Nobody answered. Who do I talk to?",
    }

    run = drive(_submit(ticket))

    assert run.state == RunState.NEEDS_HUMAN
    assert run.error is not None
    assert run.error["class"] == "handoff_failed"
    assert run.error["message"] == (
        "the hand-off (handoff_to_human) could not be filed: No ticket T-4242 exists.; "
        "a person must take the case"
    )
    assert run.error["details"]["error"]["details"]["code"] == "ticket_not_found"
    assert run.error["details"]["arguments"]["ticket_id"] == "T-4242"
    assert run.degraded == [Degradation.HANDOFF_FAILED]
    request = _escalation(run)
    assert request.rule == "handoff_failed"
    action = Action.objects.get(run=run, tool="handoff_to_human")
    # The policy saw it (execute): a tool's own failure is not a refusal before it.
    assert (action.status, action.error_class, action.verdict) == (
        ActionStatus.FAILED,
        "tool_error",
        Verdict.EXECUTE,
    )
    assert _effects() == before
    assert (
        AuditEvent.objects.filter(
            verb="run.needs_human", object_id=str(run.pk), after__error__class="handoff_failed"
        ).count()
        == 1
    )


def test_invariant_10_a_seeded_ticket_answered_honestly_is_a_plain_success(
    shop: None, honest_model: Simulator
) -> None:
    run = drive(_submit(seeded_ticket_input("T-0002")))

    assert run.state == RunState.SUCCEEDED, run.error
    assert run.output == "T-0002: refunded 52.80 EUR on SO-1002; replied to the customer."
    assert run.degraded == []
    assert _refused_answers(run) == []


# --- a final answer that lies ---------------------------------------------------------------


def test_invariant_10_a_final_answer_claiming_a_refund_nobody_made_never_succeeds(
    shop: None, lying_model: Simulator
) -> None:
    before = _effects()

    run = drive(_submit(seeded_ticket_input("T-0001")))

    assert run.state == RunState.NEEDS_HUMAN
    assert run.error is not None
    assert run.error["class"] == "verification_failed"
    assert run.error["message"] == (
        "claims_match_actions: the final answer does not match what the run did: it "
        "reports a refund, but no call of this run made one"
    )
    assert run.error["details"]["answer"] == (
        "T-0001: replied to the customer. Everything was refunded in full."
    )
    assert _refused_answers(run) == ["claims_match_actions", "claims_match_actions"]
    # The model was told once, by the runtime (a system message), not by the customer.
    told = [m for m in run.checkpoint["messages"] if m["role"] == "system"][1:]
    assert len(told) == 2
    assert told[0]["content"].startswith("Your final answer was not accepted: claims_match")
    assert run.degraded == [Degradation.VERIFICATION_FAILED]
    assert _escalation(run).rule == "verification_failed"
    # The reply it did send is the only effect; no refund appeared to make the claim true.
    assert _effects() == (before[0], before[1], before[2] + 1, before[3])


@pytest.mark.parametrize(
    ("answer", "actions", "failure"),
    [
        ("T-0002: refunded 29.00 EUR on SO-1002; replied to the customer.", "refund+reply", None),
        ("T-0002: refunded 52.80 EUR on SO-1002.", "refund+reply", "refund of 52.80"),
        ("Everything was refunded in full and the customer was told.", "reply", "a refund"),
        ("I cancelled SO-1004.", "reply", "a cancellation"),
        ("No refund was issued; the order was already cancelled.", "reply", None),
        ("T-0001: handed off to a human (normal priority).", "", "a hand-off"),
        ("Rule-based fallback: the ticket was handed to the support team.", "handoff", None),
    ],
)
def test_invariant_10_the_claims_of_an_answer_are_checked_against_the_calls(
    answer: str, actions: str, failure: str | None
) -> None:
    made = {
        "refund": ActionDone("issue_refund", {}, "succeeded", {"amount": "29.00"}),
        "reply": ActionDone("send_reply", {}, "succeeded", {"reply_id": 1}),
        "handoff": ActionDone("handoff_to_human", {}, "succeeded", {"handoff_id": 1}),
    }
    # A failed refund is no refund.
    done = (
        ActionDone("issue_refund", {}, "failed", {"error": {}}),
        *(made[name] for name in actions.split("+") if name),
    )

    result = claims_match_actions(VerifierContext(input={}, actions=done, answer=answer))

    if failure is None:
        assert result is None
    else:
        assert result is not None
        assert failure in result


def test_the_outcome_check_accepts_a_reply_a_hand_off_or_spam_and_nothing_else() -> None:
    def settled(answer: str, *tools: str) -> bool:
        done = tuple(ActionDone(tool, {}, "succeeded", {}) for tool in tools)
        return ticket_settled(VerifierContext(input={}, actions=done, answer=answer)) is None

    assert settled("done", "send_reply")
    assert settled("done", "handoff_to_human")
    assert settled("This ticket is spam; no reply.")
    assert not settled("Looked the order up.", "lookup_order")
    assert not settled("All sorted.", "issue_refund")


# --- calls the verifier refuses before the policy ---------------------------------------------


def _step_until_proposed(run: Run, tool: str) -> Action:
    for _ in range(20):
        run.refresh_from_db()
        action = Action.objects.filter(
            run=run, tool=tool, status=ActionStatus.PROPOSED, policy_version=""
        ).first()
        if action is not None:
            return action
        assert not run.is_terminal
        services.run_step_execute(run_id=str(run.id), seq=run.next_seq)
    raise AssertionError(f"no {tool} call was proposed")


@pytest.mark.parametrize(
    ("email", "message"),
    [
        # The ticket's own customer: told the balance, so it can correct the amount.
        (
            "priya.patel@example.com",
            "refund_within_balance: the refund of 500.00 exceeds the refundable amount of "
            "SO-1002, 52.80 EUR",
        ),
        # (Another customer's order never gets this far: the subject check blocks the
        # lookup before any refund is proposed; see tests/reviews/test_subject_sums_authority.)
    ],
)
def test_invariant_6_a_refund_over_the_balance_is_refused_before_the_policy(
    shop: None, honest_model: Simulator, email: str, message: str
) -> None:
    """A hostile model raises the refund past the balance: nothing runs, no queue sees it."""
    run = _submit({**seeded_ticket_input("T-0002"), "customer_email": email})
    action = _step_until_proposed(run, "issue_refund")
    Action.objects.filter(pk=action.pk).update(arguments={**action.arguments, "amount": "500.00"})
    before = _effects()

    services.run_step_execute(run_id=str(run.id), seq=Run.objects.get(pk=run.pk).next_seq)

    action.refresh_from_db()
    assert (action.status, action.error_class) == (ActionStatus.FAILED, "verification_failed")
    assert (action.verdict, action.verdict_reason) == (Verdict.NOT_EVALUATED, message)
    assert (action.policy_rule, action.policy_version) == ("", "")
    assert action.result == {
        "error": {
            "class": "verification_failed",
            "message": message,
            "details": {
                "failures": [
                    {"verifier": "refund_within_balance", "message": message.split(": ", 1)[1]}
                ]
            },
        }
    }
    assert not ApprovalRequest.objects.filter(action=action).exists()
    run.refresh_from_db()
    assert run.state == RunState.RUNNING  # the first refusal goes back to the model
    assert run.checkpoint["verification_failures"] == 1
    # The lookup and the policy search; the refused refund never reached the tool.
    assert run.tool_calls == 2
    assert run.degraded == [Degradation.VERIFICATION_FAILED]
    assert json.loads(run.checkpoint["messages"][-1]["content"]) == action.result
    assert _effects() == before


def test_invariant_6_a_refused_call_at_the_agents_limit_takes_the_run_to_a_person(
    shop: None, honest_model: Simulator
) -> None:
    """``strict`` allows one refusal (verification_attempts=1): a person, not the model."""
    run = services.run_submit(agent_name="strict", run_input=seeded_ticket_input("T-0002"))[0]
    action = _step_until_proposed(run, "issue_refund")
    Action.objects.filter(pk=action.pk).update(arguments={**action.arguments, "amount": "99.00"})
    before = _effects()

    services.run_step_execute(run_id=str(run.id), seq=Run.objects.get(pk=run.pk).next_seq)

    run.refresh_from_db()
    assert run.state == RunState.NEEDS_HUMAN
    assert run.error is not None
    assert run.error["class"] == "verification_failed"
    assert run.error["message"] == (
        "refund_within_balance: the refund of 99.00 exceeds the refundable amount of "
        "SO-1002, 52.80 EUR"
    )
    assert run.checkpoint["verification_failures"] == 0  # a person resuming gives fresh tries
    assert _escalation(run).rule == "verification_failed"
    action.refresh_from_db()
    assert (action.verdict, action.status) == (Verdict.NOT_EVALUATED, ActionStatus.FAILED)
    assert _effects() == before


def test_a_redone_refund_whose_effect_happened_is_not_refused_by_its_verifier(
    shop: None, honest_model: Simulator
) -> None:
    """The balance moved because of the call itself: its redo replays, never re-checks."""
    run = _submit(seeded_ticket_input("T-0002"))
    action = _step_until_proposed(run, "issue_refund")
    # The effect, as a worker that died after it left it: the whole balance is gone.
    Refund.objects.create(
        order=Order.objects.get(order_id="SO-1002"),
        amount=Decimal("52.80"),
        reason="left by a dead worker",
        idempotency_key=action.idempotency_key,
        result={"refund_id": 0, "amount": "52.80"},
    )

    services.run_step_execute(run_id=str(run.id), seq=Run.objects.get(pk=run.pk).next_seq)

    action.refresh_from_db()
    assert (action.status, action.result) == (
        ActionStatus.SUCCEEDED,
        {"refund_id": 0, "amount": "52.80"},
    )


# --- not evaluated ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error_class"),
    [
        ("unknown_tool_rate", "tool_unknown"),
        ("schema_invalid_rate", "tool_args_invalid"),
        ("malformed_json_rate", "tool_args_invalid"),
    ],
)
def test_a_call_refused_before_the_policy_is_recorded_as_not_evaluated(
    shop: None, honest_model: Simulator, fault: str, error_class: str
) -> None:
    run = _submit(seeded_ticket_input("T-0001"))
    honest_model.configure(**{fault: 1.0})
    services.run_step_execute(run_id=str(run.id), seq=0)  # the model's corrupted call
    honest_model.configure(**{fault: 0.0})

    run = drive(run)

    assert run.state == RunState.SUCCEEDED, run.error
    refused = Action.objects.get(run=run, proposed_seq=0)
    assert (refused.status, refused.error_class) == (ActionStatus.FAILED, error_class)
    assert refused.verdict == Verdict.NOT_EVALUATED
    assert refused.verdict_reason == refused.result["error"]["message"]
    assert (refused.policy_rule, refused.policy_version) == ("", "")
    # Every call that reached the policy carries its verdict, unchanged: execute.
    evaluated = Action.objects.filter(run=run).exclude(pk=refused.pk)
    assert {(a.verdict, a.policy_version != "") for a in evaluated} == {(Verdict.EXECUTE, True)}


# --- degraded outcomes --------------------------------------------------------------------


def test_invariant_10_a_run_served_only_by_the_rule_fallback_is_degraded(
    shop: None, honest_model: Simulator
) -> None:
    honest_model.configure(server_error_rate=1.0)
    before = _effects()

    run = drive(_submit(seeded_ticket_input("T-0001")))

    assert run.state == RunState.SUCCEEDED, run.error
    assert run.output.startswith("Rule-based fallback: no model was available")
    assert run.degraded == [
        Degradation.RETRIED,
        Degradation.FALLBACK_MODEL,
        Degradation.BREAKER_OPEN,
        Degradation.RULE_FALLBACK,
    ]
    served = set(run.steps.filter(kind="model", status="ok").values_list("route", flat=True))
    assert served == {"rule"}
    assert _effects() == (before[0], before[1], before[2], before[3] + 1)  # the hand-off


def test_invariant_10_a_rule_fallback_that_cannot_hand_off_goes_to_a_person(
    shop: None, honest_model: Simulator
) -> None:
    """No ticket id: the rule can only say "a person must pick it up"; now one does."""
    honest_model.configure(server_error_rate=1.0)

    run = drive(_submit(CANCEL_ALL))

    assert run.state == RunState.NEEDS_HUMAN
    assert run.error is not None
    assert run.error["class"] == "verification_failed"
    assert "ticket_settled" in run.error["message"]
    assert Degradation.RULE_FALLBACK in run.degraded
    assert _escalation(run).rule == "verification_failed"


# --- pages and the API ----------------------------------------------------------------------


@pytest.fixture
def two_runs(shop: None, operator: Any) -> tuple[Run, Run]:
    plain = services.run_submit(
        agent_name="support", run_input=seeded_ticket_input("T-0001"), submitted_by=operator
    )[0]
    degraded = services.run_submit(
        agent_name="support", run_input=seeded_ticket_input("T-0002"), submitted_by=operator
    )[0]
    Run.objects.filter(pk=plain.pk).update(state=RunState.SUCCEEDED)
    Run.objects.filter(pk=degraded.pk).update(
        state=RunState.SUCCEEDED, degraded=[Degradation.RULE_FALLBACK, Degradation.RETRIED]
    )
    return plain, degraded


def _listed(client: Client, query: str) -> list[str]:
    response = client.get(f"/runs/{query}")
    assert response.status_code == 200
    return [
        run_id
        for run_id in (str(r.id)[:8] for r in Run.objects.all())
        if run_id in response.content.decode()
    ]


def test_the_runs_list_shows_a_degraded_badge_and_filters_on_it(
    client: Client, operator: Any, two_runs: tuple[Run, Run]
) -> None:
    plain, degraded = (str(r.id)[:8] for r in two_runs)
    client.force_login(operator)

    assert sorted(_listed(client, "")) == sorted([plain, degraded])
    assert _listed(client, "?degraded=yes") == [degraded]
    assert _listed(client, "?degraded=no") == [plain]
    assert _listed(client, "?degraded=rule_fallback") == [degraded]
    assert _listed(client, "?degraded=fallback_model") == []
    # A value that is no filter is ignored, not an error.
    assert sorted(_listed(client, "?degraded=%27%3B--")) == sorted([plain, degraded])
    page = client.get("/runs/?degraded=yes").content.decode()
    assert page.count('class="state state-degraded"') == 1
    assert 'title="served by the rule-based fallback; needed retries"' in page
    assert "succeeded, degraded" in page


def test_the_run_page_names_why_it_is_degraded(
    client: Client, operator: Any, two_runs: tuple[Run, Run]
) -> None:
    plain, degraded = two_runs
    client.force_login(operator)

    page = client.get(f"/runs/{degraded.id}/").content.decode()
    plain_page = client.get(f"/runs/{plain.id}/").content.decode()

    assert (
        '<small class="degraded-why">served by the rule-based fallback; needed retries</small>'
        in page
    )
    assert "state-degraded" not in plain_page
    assert '<span class="state state-succeeded">succeeded</span>' in plain_page


def test_invariant_9_the_degraded_filter_shows_an_outsider_nothing(
    client: Client, outsider: Any, two_runs: tuple[Run, Run]
) -> None:
    client.force_login(outsider)
    before = list(Run.objects.order_by("pk").values_list("pk", "state", "degraded"))

    assert client.get("/runs/?degraded=yes").status_code == 403
    assert client.get(f"/runs/{two_runs[1].id}/").status_code == 404
    assert list(Run.objects.order_by("pk").values_list("pk", "state", "degraded")) == before
