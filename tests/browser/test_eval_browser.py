"""An operator runs an eval of a candidate release from the eval pages, watches its
progress bar fill while real workers run the examples, compares it with production's
eval, opens an example that regressed, and sees on the release page why production
refuses the candidate.

Daphne serves the app, real Celery workers run the examples through the simulator.
Screenshots land in test-artifacts/ (AGENTDESK_TEST_ARTIFACTS) as eval-*.png.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from agentdesk.roles import roles_sync
from evals import datasets
from evals.models import Dataset, Eval
from examples.support.seed import seed_shop
from releases import configuration, prompts, services
from tests.conftest import ARTIFACTS
from tests.evals.test_gate import _example, scored_eval
from tests.processes import Simulator, WebServer, WorkerPool

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AGENT = "support"


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"eval-{name}.png"), full_page=True)


def test_an_operator_runs_an_eval_compares_it_and_sees_the_gate(
    page: Page, workers: WorkerPool, web_server: WebServer, model_endpoint: Simulator
) -> None:
    seed_shop()
    model_endpoint.configure(mistake_rate=0, latency_ms=150)
    operator = get_user_model().objects.create_user("otto", password="otto-pw")
    operator.groups.add(roles_sync()["release_manager"])
    services.release_labels(agent_name=AGENT)
    prompts.prompt_version_create(
        agent_name=AGENT,
        template=prompts.prompt_version_first(agent_name=AGENT).template + "\nBe brief.",
        note="brief",
        user=operator,
    )
    release = services.release_make(
        agent_name=AGENT,
        prompt_number=2,
        config_number=configuration.config_version_first(agent_name=AGENT).number,
        user=operator,
    )
    for label in ("dev", "staging"):
        services.release_label_move(
            agent_name=AGENT, label=label, number=release.number, user=operator
        )
    version = datasets.dataset_create(
        agent_name=AGENT, name="gating", user=None, examples=[_example(i) for i in range(12)]
    )
    Dataset.objects.filter(pk=version.dataset_id).update(gating=True)
    # Production's eval is on record, with every example right.
    baseline = scored_eval(services.release_production(agent_name=AGENT), version)
    workers.start(1, concurrency=4)

    base = web_server.base_url
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"{base}/login/?next=/evals/{AGENT}/evals/")
    page.fill("input[name=username]", "otto")
    page.fill("input[name=password]", "otto-pw")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text(f"{AGENT} evals")

    page.fill("input[name=release]", "staging")
    page.fill("input[name=dataset]", "gating")
    page.click("button:has-text('Run the eval')")
    expect(page.locator("h1")).to_contain_text(f"release {release.number} on gating@1")
    _shot(page, "0-running")
    # The progress part is polled until every example is in; then the scores show.
    expect(page.locator("#metrics")).to_be_visible(timeout=60_000)
    expect(page.locator("#metrics")).to_contain_text("Tool selection")
    candidate = Eval.objects.exclude(pk=baseline.pk).get()
    assert candidate.metrics["errors"] == 0
    _shot(page, "1-finished")

    page.click(f"text=eval {baseline.pk}")
    expect(page.locator("#deltas")).to_contain_text("tool_selection")
    _shot(page, "2-compare")

    page.goto(f"{base}/releases/{AGENT}/")
    production = page.locator("#label-production")
    # Every example right, as production's: the gate passes, and says on what evidence.
    expect(production).to_contain_text(f"Gate: passed: eval {candidate.pk} passed against eval")
    _shot(page, "3-release")
    production.locator("button:has-text('Promote release')").click()
    expect(page.locator(".flash-success")).to_contain_text("Promoted release 2 to production")
    assert services.release_production(agent_name=AGENT) == release

    page.goto(f"{base}/evals/{AGENT}/evals/")
    expect(page.locator("svg.chart circle").first).to_be_visible()
    _shot(page, "4-list")
