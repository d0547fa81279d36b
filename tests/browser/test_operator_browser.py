"""An operator lowers the refund threshold in Debian's Chromium; an auditor finds it later.

The real stack, as in the inbox test: Daphne serves the app, real Celery workers run the
support agent against the model simulator. The support policy sends refunds over EUR 100
to a senior reviewer; every other refund waits in "refunds" only because it is
irreversible (its confidence threshold is never the deciding reason, and risk alone
already sends every refund to a person). So "lowering the refund threshold" is lowering
that amount: the operator makes refunds over EUR 50 go to a senior reviewer, and the same
ticket, a EUR 52.80 refund, moves from "refunds" to "refunds-senior". A reviewer approves
it; an auditor then finds the activation and the decision in the audit log. Screenshots
land in test-artifacts/ (AGENTDESK_TEST_ARTIFACTS) as operator-*.png.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from guardian.shortcuts import assign_perm
from playwright.sync_api import Locator, Page, expect

from agentdesk.roles import roles_sync
from audit.models import AuditEvent
from examples.support.seed import seed_shop
from releases.models import AgentConfigVersion
from reviews import services as review_services
from reviews.models import ApprovalRequest, Queue, RequestState
from runs import services as run_services
from runs.models import Action, Run, RunState
from tests.conftest import ARTIFACTS, wait_until
from tests.processes import Simulator, WebServer, WorkerPool
from tests.runs.factories import seeded_ticket_input

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# With the simulator's mistakes off, T-0002 leads to one refund of EUR 52.80: over the new
# limit of 50, under the old one of 100.
TICKET = "T-0002"
NEW_RULE = {
    "name": "refund_over_50",
    "when": "args.amount > 50",
    "description": "Refunds over EUR 50 are checked by a senior reviewer.",
}


def _user(username: str, role: str) -> Any:
    user = get_user_model().objects.create_user(username, password=f"{username}-pw")
    user.groups.add(roles_sync()[role])
    return user


def _reviewer() -> Any:
    user = _user("rita", "reviewer")
    for slug in ("refunds", "refunds-senior", "support"):
        # The demo seed creates these queues too: this test's names are the ones shown.
        queue, _ = Queue.objects.update_or_create(
            slug=slug, defaults={"name": slug.replace("-", " ").title()}
        )
        assign_perm("reviews.view_queue", user, queue)
        assign_perm("reviews.decide_queue", user, queue)
    return user


def _submit() -> Run:
    run, _ = run_services.run_submit(agent_name="support", run_input=seeded_ticket_input(TICKET))
    return run


def _parked(run: Run, workers: WorkerPool) -> ApprovalRequest:
    def parked() -> bool:
        run.refresh_from_db()
        return run.state == RunState.WAITING_FOR_APPROVAL

    wait_until(
        parked,
        timeout_s=60,
        what=f"run {run.pk} to wait for approval",
        describe=lambda: (run.state, run.error, workers.logs(tail_chars=3000)),
    )
    return ApprovalRequest.objects.select_related("queue").get(run=run, state=RequestState.PENDING)


def _routing(request: ApprovalRequest) -> tuple[str, str, str, int]:
    return (request.tool, request.rule, request.queue.slug, request.approvals_required)


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"operator-{name}.png"), full_page=True)


def _log_in(page: Page, base_url: str, username: str, next_path: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{base_url}/login/?next={next_path}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", f"{username}-pw")
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base_url}{next_path}")


def _audit_search(page: Page, **filters: str) -> None:
    """Fill the audit filters (the rest cleared) and search; htmx swaps the results."""
    form = page.locator("form.audit-filters")
    for name in ("actor", "object_type", "object_id", "verb", "trace_id"):
        form.locator(f"input[name={name}]").fill(filters.get(name, ""))
    form.locator("button[type=submit]").click()
    # htmx pushes the searched URL once the results are swapped in.
    for pair in urlencode(filters).split("&"):
        expect(page).to_have_url(re.compile(rf"[?&]{re.escape(pair)}(&|$)"))


def test_an_operator_lowers_the_refund_limit_and_an_auditor_finds_it(
    page: Page,
    workers: WorkerPool,
    web_server: WebServer,
    model_endpoint: Simulator,
) -> None:
    seed_shop()
    reviewer = _reviewer()
    _user("otto", "operator")
    _user("aude", "auditor")
    model_endpoint.configure(mistake_rate=0)
    workers.start(1, concurrency=4)
    base = web_server.base_url
    page.set_viewport_size({"width": 1440, "height": 900})

    # Before: version 1 (declared in code) sends the EUR 52.80 refund to "refunds" only
    # because a refund is irreversible; one reviewer.
    before = _parked(_submit(), workers)
    assert _routing(before) == ("issue_refund", "risk", "refunds", 1)
    assert before.arguments["amount"] == "52.80"
    assert before.run.config_version is not None
    assert before.run.config_version.number == 1

    # 1. The operator opens the support agent and starts a new version from the active one.
    _log_in(page, base, "otto", "/agents/support/")
    expect(page.locator("h2", has_text="Active: version 1")).to_be_visible()
    _shot(page, "1-agent")
    page.click("text=New version from v1")
    expect(page).to_have_url(f"{base}/agents/support/new")
    rule = page.locator("table.config-rules tbody tr").first
    expect(rule.locator("input[name='rules-0-name']")).to_have_value("refund_over_100")
    expect(rule.locator("input[name='rules-0-when']")).to_have_value(
        "amount + sums.record.total > 100.0"
    )
    rule.locator("input[name='rules-0-name']").fill(NEW_RULE["name"])
    rule.locator("input[name='rules-0-description']").fill(NEW_RULE["description"])
    page.fill("input[name=note]", "Senior review from EUR 50: too many mid-size refunds slip.")
    _shot(page, "2-new-version-form")
    # A first try with four mistakes in four places: one submit shows every one, each at
    # its field and naming it, and saves nothing.
    senior = rule.locator("input[name='rules-0-queue']").input_value()
    decision = page.locator("input[name=tier__decision]").input_value()
    steps = page.locator("input[name=max_steps]").input_value()
    rule.locator("input[name='rules-0-when']").fill("ammount > 50")
    rule.locator("input[name='rules-0-queue']").fill("refunds-senoir")
    page.fill("input[name=tier__decision]", "gpt-4o@lab, gpt-4o-mini@default")
    page.fill("input[name=max_steps]", "0")
    page.click("button:has-text('Save as a new version')")
    expect(page.locator(".error-summary")).to_contain_text("Nothing was saved: 4 problems to fix.")
    expect(page.locator(".error-summary li")).to_have_count(4)
    rule = page.locator("table.config-rules tbody tr").first
    expect(rule.locator("input[name='rules-0-when'] + .error")).to_contain_text(
        "rules[1].when: unknown variable 'ammount' (did you mean 'amount'?)"
    )
    expect(rule.locator("input[name='rules-0-queue'] + .error")).to_contain_text(
        "rules[1].queue: the queue 'refunds-senoir' does not exist"
    )
    expect(page.locator("input[name=tier__decision] + .error")).to_contain_text(
        "model_tiers.decision[1].endpoint: the endpoint 'lab' is not configured"
    )
    expect(page.locator("input[name=max_steps] + .error")).to_contain_text(
        "greater than or equal to 1"
    )
    _shot(page, "2a-every-error-at-once")
    assert AgentConfigVersion.objects.filter(agent_name="support").count() == 1
    rule.locator("input[name='rules-0-when']").fill(NEW_RULE["when"])
    rule.locator("input[name='rules-0-queue']").fill(senior)
    page.fill("input[name=tier__decision]", decision)
    page.fill("input[name=max_steps]", steps)
    # No full-page shot here: on this page (a POST's answer, taller with its errors) a click
    # right after one lands nowhere in Chromium; the shot of the filled form is above.
    page.click("button:has-text('Save as a new version')")

    # 2. Saved, not active: the version's page shows its diff against version 1.
    expect(page).to_have_url(f"{base}/agents/support/versions/2/")
    summary = page.locator(".config-diff table tbody tr")
    expect(summary).to_have_count(2)
    expect(summary.nth(0).locator("code")).to_have_text("rules.refund_over_100")
    expect(summary.nth(0).locator("td.after")).to_have_text("—")
    expect(summary.nth(1).locator("code")).to_have_text("rules.refund_over_50")
    expect(summary.nth(1).locator("td.before")).to_have_text("—")
    expect(summary.nth(1).locator("td.after")).to_contain_text('"when": "args.amount > 50"')
    _shot(page, "3-diff")
    # Activating asks first: the diff against the active version, then a confirmation.
    page.click("a:has-text('Activate version 2')")
    expect(page).to_have_url(f"{base}/agents/support/versions/2/activate")
    expect(page.locator("h1")).to_have_text("Activate support to version 2?")
    expect(page.locator(".config-diff table tbody tr")).to_have_count(2)
    _shot(page, "3b-confirm-activation")
    page.click("form.confirm-activate button:has-text('Activate version 2')")
    expect(page).to_have_url(f"{base}/agents/support/")
    expect(page.locator(".flash")).to_contain_text(
        "Activated version 2; new runs use it (production is now release 2)."
    )
    expect(page.locator("h2", has_text="Active: version 2")).to_be_visible()
    _shot(page, "4-activated")
    v2 = AgentConfigVersion.objects.get(agent_name="support", number=2)
    assert [rule["name"] for rule in v2.config["rules"]] == [
        "refund_over_50",
        "refund_over_250",
        "customer_over_300",
    ]

    # 3. A new run of the same ticket is routed by version 2: a senior reviewer. The run
    # parked under version 1 keeps its version and its queue.
    run = _submit()
    request = _parked(run, workers)
    assert _routing(request) == ("issue_refund", "refund_over_50", "refunds-senior", 1)
    assert request.arguments["amount"] == "52.80"
    assert run.config_version_id == v2.pk
    assert Action.objects.get(pk=request.action_id).policy_version == v2.policy_version
    before.refresh_from_db()
    assert _routing(before) == ("issue_refund", "risk", "refunds", 1)
    assert before.state == RequestState.PENDING

    # The operator sees on the run's page which release and version it follows.
    assert (run.release.number, run.release.config_version_id) == (2, v2.pk)
    page.goto(f"{base}/runs/{run.pk}/")
    release = page.locator("#run-release a")
    expect(release).to_have_text("release 2")
    expect(release).to_have_attribute("href", "/releases/support/2/")
    fact = page.locator("#run-config-version a")
    expect(fact).to_have_text("v2")
    expect(fact).to_have_attribute("href", "/agents/support/versions/2/")
    expect(page.locator(".card-wait")).to_contain_text("Refunds Senior")
    _shot(page, "5-run-waiting")

    # 4. The senior reviewer approves; the refund goes through and the run ends.
    review_services.approval_approve(
        request_id=request.pk, user=reviewer, seen_hash=request.args_hash
    )

    def ended() -> bool:
        run.refresh_from_db()
        return run.is_terminal

    wait_until(
        ended,
        timeout_s=60,
        what=f"run {run.pk} to end",
        describe=lambda: (run.state, run.error, workers.logs(tail_chars=3000)),
    )
    assert run.state == RunState.SUCCEEDED, run.error
    assert run.config_version_id == v2.pk

    # 5. The auditor finds the operator's activation...
    _log_in(page, base, "aude", "/audit/")
    # (activating version 2 moved production from release 1 to release 2, its one event)
    _audit_search(page, actor="otto", verb="release.label_moved")
    rows = page.locator("#audit-results table.audit-table tbody tr")
    expect(rows).to_have_count(1)
    activated = rows.first
    expect(activated.locator("td").nth(2)).to_have_text("otto")
    expect(activated.locator("td").nth(3)).to_have_text("release.label_moved")
    expect(activated.locator("td").nth(4)).to_contain_text("release support")

    def change(field: str) -> Locator:
        return activated.locator("dl.audit-changes > div").filter(
            has=page.locator("dt", has_text=re.compile(rf"^{field}$"))
        )

    expect(change("label").locator("dd")).to_have_text("production → production")
    expect(change("config").locator("dd")).to_have_text("1 → 2")
    expect(change("number").locator("dd")).to_have_text("1 → 2")
    expect(change("kind").locator("dd")).to_have_text("activation")
    _shot(page, "6-audit-activation")

    # ...and the decision on the request it routed, among that request's events.
    _audit_search(page, object_type="approval_request", object_id=str(request.pk))
    events = AuditEvent.objects.filter(object_type="approval_request", object_id=str(request.pk))
    assert list(events.order_by("seq").values_list("verb", flat=True)) == [
        "request.opened",
        "request.approve",
    ]
    expect(rows).to_have_count(2)
    decision = rows.filter(has=page.locator("code", has_text="request.approve"))
    expect(decision).to_have_count(1)
    expect(decision.locator("td").nth(2)).to_have_text("rita")
    expect(decision.locator("td").nth(4)).to_contain_text(f"approval_request {request.pk}")
    opened = rows.filter(has=page.locator("code", has_text="request.opened"))
    expect(opened.locator("dl.audit-changes")).to_contain_text("refunds-senior")
    expect(opened.locator("dl.audit-changes")).to_contain_text("refund_over_50")
    _shot(page, "7-audit-decision")
