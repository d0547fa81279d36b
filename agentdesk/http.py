"""What views share: request types (what the middleware adds), the agent a page is about."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django_htmx.middleware import HtmxDetails

from agents.definition import Agent
from agents.registry import UnknownAgent, agent_get


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def agent_for(request: HttpRequest, agent_name: str, *needed: str) -> Agent:
    """The agent a page is about, if the user holds every permission ``needed``.

    The permission first (403), then the agent (404): a stranger learns nothing of which
    agents exist.
    """
    if not all(request.user.has_perm(permission) for permission in needed):
        raise PermissionDenied
    try:
        return agent_get(agent_name)
    except UnknownAgent:
        raise Http404 from None
