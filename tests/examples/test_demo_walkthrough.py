"""What the README promises the demo shows, against the demo's own seed and logins.

- Two-person approval (invariant 13): T-0003 refunds an order over EUR 250, so the refund
  waits in "Refunds (senior)" for two approvals, senior's and admin's, and runs once.
- A dead letter on purpose (invariant 10): with the simulator failing every call
  (``server_error_rate`` 1.0), a run of ``support-unattended`` (no rule fallback, no
  person) is dead-lettered with the last error; once the model answers again and its
  breaker has cooled down, an operator's requeue finishes it from its checkpoint.

The runs are driven in this process against the model simulator over HTTP, as in
tests/runs; the people act through the pages, as they would in the demo.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from agents import registry
from examples.support.models import Order, Refund
from reviews.models import ApprovalRequest, RequestState
from runs import services
from runs.models import DeadLetter, Run, RunState
from tests.processes import Simulator
from tests.runs.factories import drive, seeded_ticket_input
from tests.snapshot import changed_tables, db_snapshot

pytestmark = pytest.mark.django_db

DEMO_AGENTS = [
    "examples.support.agent.support_agent",
    "examples.support.agent.support_unattended_agent",
]


@pytest.fixture
def demo(settings: Any, model_endpoint: Simulator) -> Iterator[dict[str, Any]]:
    """The demo's data and agents, as `make demo` seeds and registers them."""
    settings.AGENTDESK_AGENTS = DEMO_AGENTS
    registry.agents.cache_clear()
    call_command("seed_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115
    users = {user.username: user for user in get_user_model().objects.all()}
    yield users
    registry.agents.cache_clear()


def _as(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _submit(user: Any, agent: str, ticket: str) -> Run:
    run, _ = services.run_submit(
        agent_name=agent, run_input=seeded_ticket_input(ticket), submitted_by=user
    )
    return run


def test_inv13_the_demo_order_over_250_needs_two_senior_approvals(
    demo: dict[str, Any],
) -> None:
    assert Order.objects.get(order_id="SO-1003").total == Decimal("279.00")
    run = drive(_submit(demo["operator"], "support", "T-0003"))

    assert run.state == RunState.WAITING_FOR_APPROVAL
    request = ApprovalRequest.objects.get(run=run, state=RequestState.PENDING)
    # (Which rule name is recorded is the policy's business: both rules match 279.00.)
    assert (request.tool, request.queue.slug, request.approvals_required) == (
        "issue_refund",
        "refunds-senior",
        2,
    )
    assert request.arguments["amount"] == "279.00"
    approve = {"args_hash": request.args_hash}
    url = f"/inbox/requests/{request.pk}/approve"

    # The reviewer only sees the senior queue; the operator does not see it at all.
    reviewer, operator = _as(demo["reviewer"]), _as(demo["operator"])
    before = db_snapshot()
    assert reviewer.post(url, approve).status_code == 403
    assert operator.post(url, approve).status_code == 404
    assert changed_tables(before, db_snapshot()) == []

    assert _as(demo["senior"]).post(url, approve).status_code == 302
    request.refresh_from_db()
    assert request.state == RequestState.PENDING  # one of two
    assert Refund.objects.filter(order__order_id="SO-1003", amount=Decimal("279.00")).count() == 0

    assert _as(demo["admin"]).post(url, approve).status_code == 302
    run = drive(run)

    assert run.state == RunState.SUCCEEDED
    assert Refund.objects.filter(order__order_id="SO-1003", amount=Decimal("279.00")).count() == 1


def test_inv10_a_failing_model_dead_letters_an_unattended_run_and_requeue_finishes_it(
    demo: dict[str, Any], model_endpoint: Simulator, settings: Any
) -> None:
    settings.AGENTDESK_BREAKER_COOLDOWN_S = 0.5
    model_endpoint.configure(server_error_rate=1.0)

    run = drive(_submit(demo["operator"], "support-unattended", "T-0001"))

    assert run.state == RunState.DEAD_LETTERED
    assert run.error["class"] == "model_server_error"
    assert run.error["message"].startswith("every link of the fallback chain failed; last: ")
    letter = DeadLetter.objects.get(run=run)
    assert letter.status == "open"
    page = _as(demo["operator"]).get("/runs/dead-letters/").content.decode()
    assert f'href="/runs/dead-letters/{letter.pk}/"' in page
    assert "model_server_error" in page

    # Who may not: the reviewer does not see dead letters, the auditor may only look.
    reviewer, auditor = _as(demo["reviewer"]), _as(demo["auditor"])
    requeue = f"/runs/dead-letters/{letter.pk}/requeue/"
    before = db_snapshot()
    assert reviewer.post(requeue).status_code == 404
    assert auditor.post(requeue).status_code == 403
    assert changed_tables(before, db_snapshot()) == []

    model_endpoint.configure(server_error_rate=0)
    time.sleep(0.6)  # the breaker's cooldown: its next call is a probe
    assert _as(demo["operator"]).post(requeue).status_code == 302
    run = drive(run)

    assert run.state == RunState.SUCCEEDED
    letter.refresh_from_db()
    assert (letter.status, letter.resolved_by) == ("requeued", demo["operator"])
