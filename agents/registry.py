"""The registered agents, loaded once from the AGENTDESK_AGENTS setting.

Each entry is a dotted path to an ``Agent`` instance. A bad path or a duplicate name fails
at start-up (through ``AgentdeskConfig.ready``), not at the first run.
"""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from agents.definition import Agent


class UnknownAgent(LookupError):
    pass


@cache
def agents() -> dict[str, Agent]:
    found: dict[str, Agent] = {}
    for path in settings.AGENTDESK_AGENTS:
        try:
            agent = import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(f"AGENTDESK_AGENTS: cannot import {path!r}: {exc}") from exc
        if not isinstance(agent, Agent):
            raise ImproperlyConfigured(f"AGENTDESK_AGENTS: {path!r} is not an Agent")
        for route in dict.fromkeys(r for routes in agent.declared_tiers.values() for r in routes):
            if route.endpoint not in settings.AGENTDESK_LLM_ENDPOINTS:
                raise ImproperlyConfigured(
                    f"agent {agent.name!r} uses endpoint {route.endpoint!r}, which is not "
                    "configured; see AGENTDESK_LLM_ENDPOINTS"
                )
        if agent.name in found:
            raise ImproperlyConfigured(f"AGENTDESK_AGENTS: two agents are named {agent.name!r}")
        found[agent.name] = agent
    return found


def agent_get(name: str) -> Agent:
    try:
        return agents()[name]
    except KeyError:
        known = ", ".join(sorted(agents())) or "none"
        raise UnknownAgent(f"unknown agent {name!r}; registered agents: {known}") from None
