"""Browser tests: Playwright's sync API in Debian's Chromium (see tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _django_beside_playwright() -> Iterator[None]:
    """Allow the test's own ORM calls while Playwright's event loop runs in this thread.

    Session-scoped and autouse, so it is in place before the ``playwright`` fixture starts
    its loop; the browser tests run after every other test, so no other test runs with
    Django's async-safety check relaxed.
    """
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
