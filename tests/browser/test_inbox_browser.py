"""A reviewer works the inbox in Debian's Chromium, against the real stack.

Daphne serves the ASGI app (HTTP and websockets), real Celery workers run the agent
against the model simulator over HTTP, PostgreSQL and Redis are the machine's. The
reviewer logs in, sees new requests arrive live, approves one from the keyboard, edits
the amount of a second and rejects a third with feedback; the three runs then finish
accordingly. Screenshots land in test-artifacts/ (AGENTDESK_TEST_ARTIFACTS).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from guardian.shortcuts import assign_perm
from playwright.sync_api import Page, expect

from agentdesk.roles import roles_sync
from examples.support.models import Refund
from examples.support.seed import seed_shop
from reviews.models import ApprovalRequest, Queue, RequestState
from runs import services as run_services
from runs.models import Action, ActionStatus, Run, RunState
from tests.conftest import ARTIFACTS, wait_until
from tests.processes import Simulator, WebServer, WorkerPool
from tests.runs.factories import seeded_ticket_input

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# With the simulator's mistakes off, each of these tickets leads to one refund under EUR 100
# (a one-person review in the "refunds" queue): T-0002 52.80, T-0007 84.00, T-0020 63.00.
APPROVED, EDITED, REJECTED = "T-0002", "T-0007", "T-0020"
FEEDBACK = "Do not refund yet: reply and ask the customer for a photo of the damage."


def _reviewer() -> Any:
    user = get_user_model().objects.create_user("rita", password="rita-pw")
    user.groups.add(roles_sync()["reviewer"])
    for slug in ("refunds", "refunds-senior", "support"):
        # The demo seed creates these queues too: this test's names are the ones shown.
        queue, _ = Queue.objects.update_or_create(
            slug=slug, defaults={"name": slug.replace("-", " ").title()}
        )
        assign_perm("reviews.view_queue", user, queue)
        assign_perm("reviews.decide_queue", user, queue)
    return user


def _submit(ticket_id: str) -> Run:
    run, _ = run_services.run_submit(agent_name="support", run_input=seeded_ticket_input(ticket_id))
    return run


def _parked(run: Run) -> ApprovalRequest:
    def parked() -> bool:
        run.refresh_from_db()
        return run.state == RunState.WAITING_FOR_APPROVAL

    wait_until(parked, timeout_s=60, what=f"run {run.pk} to wait for approval")
    return ApprovalRequest.objects.get(run=run, state=RequestState.PENDING)


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"inbox-{name}.png"), full_page=True)


def _open(page: Page, request: ApprovalRequest) -> None:
    """Move the keyboard selection to the request's row (j/k), which opens its pane.

    Each key press waits for the selection it made, so a slow pane on a busy machine
    cannot make the next press overshoot the row.
    """
    row = page.locator(f'li.row[data-id="{request.pk}"]')
    expect(row).to_be_visible()
    ids = page.locator("li.row").evaluate_all("rows => rows.map(r => r.dataset.id)")
    target = ids.index(str(request.pk))
    current = page.locator('li.row[aria-current="true"]')
    for _ in range(2 * len(ids)):
        at = ids.index(current.get_attribute("data-id") or "") if current.count() else -1
        if at == target:
            break
        page.keyboard.press("j" if at < target else "k")
        expect(current).to_have_count(1)
        selected = current.get_attribute("data-id")
        expect(page.locator(f'#detail[data-id="{selected}"]')).to_be_visible(timeout=10_000)
    expect(page.locator(f'#detail[data-id="{request.pk}"]')).to_be_visible(timeout=10_000)


def test_a_reviewer_approves_edits_and_rejects_from_the_inbox(
    page: Page,
    workers: WorkerPool,
    web_server: WebServer,
    model_endpoint: Simulator,
) -> None:
    seed_shop()
    _reviewer()
    model_endpoint.configure(mistake_rate=0)
    workers.start(1, concurrency=4)
    first = _submit(APPROVED)
    approved = _parked(first)

    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"{web_server.base_url}/login/")
    page.fill("input[name=username]", "rita")
    page.fill("input[name=password]", "rita-pw")
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{web_server.base_url}/inbox/")
    expect(page.locator(f'li.row[data-id="{approved.pk}"]')).to_be_visible()
    try:
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live", timeout=10_000)
    except AssertionError:
        print("CONSOLE", console)
        print("DAPHNE", web_server.log_path.read_text()[-3000:])
        raise

    # Two more runs park while the page is open: their rows arrive over the websocket.
    second, third = _submit(EDITED), _submit(REJECTED)
    edited, rejected = _parked(second), _parked(third)
    for request in (edited, rejected):
        expect(page.locator(f'li.row[data-id="{request.pk}"]')).to_be_visible(timeout=10_000)
    _shot(page, "1-three-pending")

    # 1. Approve from the keyboard.
    _open(page, approved)
    _shot(page, "2-detail")
    page.keyboard.press("a")
    expect(page.locator("#detail")).to_contain_text("Approved by rita")
    expect(page.locator(f'li.row[data-id="{approved.pk}"]')).to_have_count(0, timeout=10_000)

    # 2. Edit the amount, then approve the edited call.
    _open(page, edited)
    page.keyboard.press("e")
    amount = page.locator('#detail details[data-form="edit"] input.amount-input')
    expect(amount).to_be_focused()
    amount.fill("50.00")
    _shot(page, "3-edit")
    page.locator('#detail details[data-form="edit"] button[type=submit]').click()
    expect(page.locator("#detail")).to_contain_text("rita", timeout=10_000)
    expect(page.locator(f'li.row[data-id="{edited.pk}"]')).to_have_count(0, timeout=10_000)

    # 3. Reject with feedback for the agent.
    _open(page, rejected)
    page.keyboard.press("r")
    feedback = page.locator('#detail details[data-form="reject"] textarea')
    expect(feedback).to_be_focused()
    feedback.fill(FEEDBACK)
    page.locator('#detail details[data-form="reject"] button[type=submit]').click()
    expect(page.locator(f'li.row[data-id="{rejected.pk}"]')).to_have_count(0, timeout=10_000)
    _shot(page, "4-all-decided")

    # The three runs finish accordingly.
    runs = [first, second, third]

    def ended() -> bool:
        return all(Run.objects.get(pk=run.pk).is_terminal for run in runs)

    wait_until(
        ended,
        timeout_s=90,
        what="the three runs to end",
        describe=lambda: (
            [(r.pk, Run.objects.get(pk=r.pk).state) for r in runs] + [workers.logs(tail_chars=3000)]
        ),
    )
    for run in runs:
        run.refresh_from_db()
        assert run.state == RunState.SUCCEEDED, (run.pk, run.error)
    order_of = {
        run.pk: Action.objects.get(run=run, tool="issue_refund", proposed_seq__lte=run.next_seq)
        for run in (first, second)
    }
    refunds = {
        run.pk: list(
            Refund.objects.filter(order__order_id=order_of[run.pk].arguments["order_id"])
            .order_by("pk")
            .values_list("amount", flat=True)
        )
        for run in (first, second)
    }
    assert refunds[first.pk] == [Decimal(approved.arguments["amount"])]
    assert refunds[second.pk] == [Decimal("50.00")]
    rejected_action = Action.objects.get(pk=rejected.action_id)
    assert rejected_action.status == ActionStatus.REJECTED
    assert FEEDBACK in rejected_action.result["error"]["message"]
    assert not Refund.objects.filter(
        order__order_id=rejected.arguments["order_id"], created_at__gte=third.created_at
    ).exists()
    assert Action.objects.filter(run=third, tool="send_reply", status="succeeded").count() == 1
