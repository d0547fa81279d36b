"""The API docs page (/api/docs) in Debian's Chromium: it renders every operation from the
schema, loads nothing from anywhere but this server, and calls the API with a token.

A screenshot lands in test-artifacts/ (AGENTDESK_TEST_ARTIFACTS) as api-docs.png.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from agentdesk.tokens import api_token_create
from tests.conftest import ARTIFACTS
from tests.reviews.factories import queue_make, request_make

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_docs_page_works_offline_and_tries_a_call(
    page: Page, live_server: Any, operator: Any
) -> None:
    approval = request_make(queue=queue_make("refunds", deciders=(operator,)))
    _, key = api_token_create(user=operator, name="docs")
    base = live_server.url
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.set_viewport_size({"width": 1280, "height": 900})

    page.goto(f"{base}/api/docs")

    expect(page.locator(".swagger-ui .info .title")).to_contain_text("AgentDesk API")
    expect(page.locator(".opblock")).to_have_count(5)

    # Authorize with the token, then try GET /api/requests from the page.
    page.click("button.authorize")
    page.fill(".auth-container input", key)
    page.click(".auth-btn-wrapper button.authorize")
    page.click("button.btn-done")
    page.click("#operations-requests-reviews_api_requests_list .opblock-summary")
    page.click("button.try-out__btn")
    page.click("button.execute")
    live = page.locator(".live-responses-table tbody .response")
    expect(live.locator(".response-col_status")).to_have_text("200")
    expect(live.locator(".response-col_description")).to_contain_text(f'"id": {approval.pk}')
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "api-docs.png"), full_page=True)

    # Swagger UI's inline icons are data: URLs; everything else is this server's.
    elsewhere = [url for url in requested if not url.startswith((base + "/", "data:"))]
    assert elsewhere == []
    assert f"{base}/static/ninja/swagger-ui-bundle.js" in requested
    assert f"{base}/api/schema" in requested
    assert f"{base}/api/requests" in requested
