"""Fixtures for the runtime tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agents import registry

TEST_AGENTS = [
    "tests.runs.agents.support_agent",
    *(
        f"tests.runs.agents.{name}"
        for name in (
            "bare",
            "humane",
            "buggy",
            "strict",
            "tight_steps",
            "tight_tools",
            "tight_tokens",
            "tight_cost",
            "tight_deadline",
            "tight_escalating",
            "slow",
            "rate_limited",
        )
    ),
]


@pytest.fixture(autouse=True)
def use_test_agents(settings: Any) -> Iterator[None]:
    """Register the variants of the example agent in tests/runs/agents.py, unreviewed.

    Autouse: every runtime test runs the example agent without review (see agents.py).
    Worker processes get the same list through ``worker_env``.
    """
    settings.AGENTDESK_AGENTS = TEST_AGENTS
    settings.AGENTDESK_RETRY_ATTEMPTS = 3
    settings.AGENTDESK_BREAKER_FAILURES = 5
    settings.AGENTDESK_BREAKER_CONSECUTIVE = 5
    registry.agents.cache_clear()
    yield
    registry.agents.cache_clear()
