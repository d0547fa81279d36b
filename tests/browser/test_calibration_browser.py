"""An operator reads a tool's calibration (the charts drawn by the vendored uPlot, their
tables beside them) and saves the recommended threshold as a new configuration version,
then sees its diff on the activation page.

In Debian's Chromium against Django's live server. Screenshots land in test-artifacts/
(AGENTDESK_TEST_ARTIFACTS) as calibration-*.png.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from agentdesk.roles import roles_sync
from examples.support.seed import queues_seed
from releases import services
from releases.models import AgentConfigVersion
from reviews import services as reviews
from tests.conftest import ARTIFACTS
from tests.reviews.factories import queue_make, request_make, user_make

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_operator_applies_a_calibrated_threshold(page: Page, live_server: Any) -> None:
    queues_seed()
    services.release_labels(agent_name="support")
    release = services.release_production(agent_name="support")
    reviewer = user_make("cal")
    queue = queue_make("calibration", deciders=(reviewer,))
    for confidence in [0.97] * 24 + [0.85] * 6:
        request = request_make(queue=queue, confidence=confidence)
        request.run.release = release
        request.run.save(update_fields=["release"])
        reviews.approval_approve(request_id=request.pk, user=reviewer, seen_hash=request.args_hash)
    operator = get_user_model().objects.create_user("otto", password="otto-pw")
    operator.groups.add(roles_sync()["operator"])

    base = live_server.url
    page.set_viewport_size({"width": 1440, "height": 1000})
    path = "/calibration/support/?tool=issue_refund&min_labels=10&alpha=0.2"
    page.goto(f"{base}/login/?next={path.replace('&', '%26').replace('?', '%3F')}")
    page.fill("input[name=username]", "otto")
    page.fill("input[name=password]", "otto-pw")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("support calibration")
    expect(page.locator("#reliability-chart canvas")).to_be_visible()
    expect(page.locator("#curve-chart canvas")).to_be_visible()
    expect(page.locator("#recommendation")).to_contain_text("Recommended threshold 0.85")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "calibration-0-report.png"), full_page=True)

    page.click("button:has-text('Save as a new configuration version')")
    version = AgentConfigVersion.objects.order_by("-number").first()
    assert version is not None
    assert version.config["thresholds"]["issue_refund"] == 0.85
    expect(page).to_have_url(f"{base}/agents/support/versions/{version.number}/activate")
    expect(page.locator("body")).to_contain_text("issue_refund")
    page.screenshot(path=str(ARTIFACTS / "calibration-1-activate.png"), full_page=True)
