"""A senior reviewer sees what the policy saw: the split refund, its sums, its flags.

A hostile model (tests.adversary, over loopback through the real SDK) refunds 60.00 twice
on one order; the first is approved in "refunds", the second lands in "refunds-senior"
because the order's sums reach 120.00. The senior opens it in Chromium: the sums table
says 60.00 executed, and the escalate form offers no queue below the request's tier.
Screenshots land in test-artifacts/.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from guardian.shortcuts import assign_perm
from playwright.sync_api import Page, expect

from agentdesk.roles import roles_sync
from examples.support.seed import seed_shop
from reviews import services
from reviews.models import ApprovalRequest, Queue, RequestState
from runs import services as run_services
from tests.adversary import Adversary
from tests.conftest import ARTIFACTS
from tests.runs.factories import drive

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def adversary(settings: Any) -> Iterator[Adversary]:
    model = Adversary().start()
    settings.AGENTDESK_LLM_ENDPOINTS = {"default": {"base_url": model.base_url, "api_key": "k"}}
    yield model
    model.stop()


def test_a_senior_sees_the_sums_that_sent_a_split_refund_to_them(
    page: Page, live_server: Any, adversary: Adversary
) -> None:
    seed_shop()  # with the demo's queues at their tiers
    senior = get_user_model().objects.create_user("sena", password="sena-pw")
    senior.groups.add(roles_sync()["reviewer"])
    for queue in Queue.objects.all():
        assign_perm("reviews.view_queue", senior, queue)
        assign_perm("reviews.decide_queue", senior, queue)
    refund = ("issue_refund", {"order_id": "SO-1003", "amount": "60.00", "reason": "faulty"})
    adversary.script = [[refund], [refund], "Refunded."]
    run, _ = run_services.run_submit(
        agent_name="support",
        run_input={
            "ticket_id": "T-0900",
            "customer_email": "oliver.smith@example.com",
            "subject": "Grinder broken",
            "body": "It stopped working.",
        },
    )
    run = drive(run)
    first = ApprovalRequest.objects.get(run=run, state=RequestState.PENDING)
    services.approval_approve(request_id=first.pk, user=senior, seen_hash=first.args_hash)
    run = drive(run)
    second = ApprovalRequest.objects.get(run=run, state=RequestState.PENDING)

    page.goto(f"{live_server.url}/login/?next=/inbox/requests/{second.pk}/")
    page.fill("input[name=username]", "sena")
    page.fill("input[name=password]", "sena-pw")
    page.click("button[type=submit]")

    evidence = page.locator("section.evidence")
    expect(evidence).to_contain_text("What the policy saw")
    expect(evidence).to_contain_text("customer oliver.smith@example.com")
    expect(evidence).to_contain_text("this call moves 60.00")
    record_row = evidence.locator("table.sums tbody tr").first
    expect(record_row).to_contain_text("this record")
    expect(record_row.locator("td").nth(0)).to_have_text("60.00")
    expect(page.locator("section.why")).to_contain_text("needs a queue of tier 2 or higher")
    options = page.locator("select[name=to_queue] option")
    assert "Refunds" not in [text.strip() for text in options.all_inner_texts()]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "request-evidence.png"), full_page=True)
