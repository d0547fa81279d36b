"""An operator writes a prompt version, tries it in dev and stages it; a release manager
ships the release and rolls it back.

In Debian's Chromium against Django's live server (no workers or websockets are needed:
the prompt and release pages are plain forms and one htmx diff). Screenshots land in
test-artifacts/ (AGENTDESK_TEST_ARTIFACTS) as prompt-*.png.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from agentdesk.roles import roles_sync
from examples.support.seed import queues_seed
from releases import services
from releases.models import PromptVersion, ReleaseLabel
from tests.conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NEW_LINE = "Sign off with the customer's first name when you know it."


def _user(username: str, role: str) -> Any:
    user = get_user_model().objects.create_user(username, password=f"{username}-pw")
    user.groups.add(roles_sync()[role])
    return user


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"prompt-{name}.png"), full_page=True)


def _log_in(page: Page, base_url: str, username: str, next_path: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{base_url}/login/?next={next_path}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", f"{username}-pw")
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base_url}{next_path}")


def _labels() -> dict[str, int]:
    return dict(ReleaseLabel.objects.values_list("label", "release__number"))


def test_a_prompt_goes_from_dev_to_production_and_back(page: Page, live_server: Any) -> None:
    queues_seed()  # a move checks that every queue its configuration names exists
    _user("otto", "operator")
    _user("rhea", "release_manager")
    base = live_server.url
    page.set_viewport_size({"width": 1440, "height": 900})

    # 1. The operator reaches the prompt from the agent's page and writes a new version.
    _log_in(page, base, "otto", "/agents/support/")
    page.click("text=Prompt versions")
    expect(page).to_have_url(f"{base}/prompts/support/")
    page.click("text=New version from v1 (dev)")
    textarea = page.locator("textarea[name=template]")
    text = textarea.input_value()
    assert text.startswith("You are the customer-support agent of $shop_name")
    textarea.fill(text + NEW_LINE + " Greet $customer_name.\n")
    page.fill("input[name=note]", "Sign off by name")
    page.click("button:has-text('Save as a new version')")

    # A placeholder the agent does not provide is refused; nothing is saved.
    expect(page.locator(".flash-error")).to_contain_text(
        "The support agent does not provide $customer_name"
    )
    assert PromptVersion.objects.count() == 1
    _shot(page, "0-refused")
    textarea.fill(text + NEW_LINE + "\n")
    page.click("button:has-text('Save as a new version')")

    # 2. Saved: the diff opens in place (htmx) from the versions table; try it in dev.
    expect(page).to_have_url(f"{base}/prompts/support/versions/2/")
    expect(page.locator(".prompt-diff .diff-add")).to_have_text(f"+{NEW_LINE}")
    page.goto(f"{base}/prompts/support/")
    page.click("text=Diff against production")
    expect(page.locator("#prompt-diff .diff-add")).to_have_text(f"+{NEW_LINE}")
    _shot(page, "0-version")
    page.click("button:has-text('Try in dev')")
    expect(page).to_have_url(f"{base}/releases/support/")
    expect(page.locator(".flash")).to_contain_text(
        "dev now runs release 2: prompt v2 with configuration v1."
    )

    # 3. The operator promotes release 2 to staging; production is not theirs to move.
    staging = page.locator(".prompt-label-card").nth(1)
    staging.locator("button:has-text('Promote release 2 from dev')").click()
    expect(page.locator(".flash")).to_contain_text("Promoted release 2 to staging.")
    production = page.locator(".prompt-label-card").nth(2)
    expect(production).to_contain_text("Moving production needs the promote_production_release")
    expect(production.locator("button")).to_have_count(0)
    assert _labels() == {"dev": 2, "staging": 2, "production": 1}
    _shot(page, "1-staged")

    # 4. The release manager promotes it to production, then rolls production back.
    _log_in(page, base, "rhea", "/releases/support/")
    production = page.locator(".prompt-label-card").nth(2)
    production.locator("button:has-text('Promote release 2 from staging')").click()
    expect(page.locator(".flash")).to_contain_text("Promoted release 2 to production.")
    assert services.release_production(agent_name="support").number == 2
    _shot(page, "2-production")

    production = page.locator(".prompt-label-card").nth(2)
    expect(production.locator("select[name=number] option")).to_have_text(
        ["release 1 · prompt v1 · config v1"]
    )
    production.locator("button:has-text('Roll back')").click()
    expect(page.locator(".flash")).to_contain_text("Rolled production back to release 1.")
    assert _labels() == {"dev": 2, "staging": 2, "production": 1}
    history = page.locator("h2:has-text('Label history') + table tbody tr")
    expect(history.first).to_contain_text("release 2 → release 1")
    expect(history.first).to_contain_text("Rollback")
    # Release 2 is on offer again as a promotion from staging, not as a second "rollback".
    production = page.locator(".prompt-label-card").nth(2)
    expect(production.locator("button:has-text('Promote release 2 from staging')")).to_have_count(1)
    expect(production.locator("select")).to_have_count(0)
    _shot(page, "3-rolled-back")
