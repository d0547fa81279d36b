"""The calibration page: how well a tool's stated confidence predicts reviewers, and the
threshold the evidence supports.

Operators and auditors read it (``releases.view_agentconfigversion``: it is about a
configuration's thresholds); operators apply a recommendation as a new configuration
version (``releases.change_agentconfigversion``), then activate it as any other, with its
diff, through the promotion gate.
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from agentdesk.http import agent_for
from agents.definition import Agent
from calibration.services import (
    DEFAULTS,
    RecommendationRefused,
    Report,
    calibration_report,
    recommendation_apply,
)
from releases.config_documents import ConfigRefused
from releases.services import release_get

VIEW = "releases.view_agentconfigversion"
CHANGE = "releases.change_agentconfigversion"


class ReportForm(forms.Form):
    """The report's knobs, from the query string; every one has a default."""

    tool = forms.CharField(required=False, max_length=100)
    release = forms.IntegerField(required=False, min_value=1, max_value=2**31 - 1)
    alpha = forms.FloatField(required=False, min_value=0.001, max_value=0.5)
    delta = forms.FloatField(required=False, min_value=0.001, max_value=0.25)
    min_labels = forms.IntegerField(required=False, min_value=10, max_value=100_000)


def _report(agent: Agent, data: Any) -> tuple[ReportForm, Report | None]:
    form = ReportForm(data)
    if not form.is_valid():
        return form, None
    values = form.cleaned_data
    tools = [tool.name for tool in agent.tools]
    tool = values["tool"] or tools[0]
    if tool not in tools:
        raise Http404
    release = None
    if values["release"]:
        release = release_get(agent_name=agent.name, number=values["release"])
        if release is None:
            raise Http404
    report = calibration_report(
        agent_name=agent.name,
        tool=tool,
        release=release,
        alpha=values["alpha"] or DEFAULTS["alpha"],
        delta=values["delta"] or DEFAULTS["delta"],
        min_labels=values["min_labels"] or int(DEFAULTS["min_labels"]),
    )
    return form, report


def _chart_data(report: Report) -> dict[str, Any]:
    filled = [b for b in report.bins if b.count]
    return {
        "reliability": {
            "stated": [b.mean_confidence for b in filled],
            "agreed": [b.agreement for b in filled],
            "counts": [b.count for b in filled],
        },
        "curve": {
            "threshold": [p.threshold for p in report.curve],
            "unreviewed": [p.unreviewed_share for p in report.curve],
            "bound": [p.bound for p in report.curve],
            "alpha": report.alpha,
        },
    }


@login_required
def calibration_page(request: HttpRequest, agent_name: str) -> HttpResponse:
    agent = agent_for(request, agent_name, VIEW)
    form, report = _report(agent, request.GET)
    context = {
        "agent": agent,
        "tools": [tool.name for tool in agent.tools],
        "form": form,
        "report": report,
        "charts": _chart_data(report) if report else None,
        "can_apply": request.user.has_perm(CHANGE),
    }
    return render(request, "calibration/report.html", context, status=200 if report else 400)


@login_required
@require_POST
def recommendation_apply_view(request: HttpRequest, agent_name: str) -> HttpResponse:
    agent = agent_for(request, agent_name, VIEW, CHANGE)
    _, report = _report(agent, request.POST)
    if report is None:
        messages.error(request, "Check the report's settings.")
        return redirect("calibration:report", agent.name)
    try:
        version = recommendation_apply(report=report, user=cast(User, request.user))
    except (RecommendationRefused, ConfigRefused) as exc:
        messages.warning(request, f"Nothing changed: {exc}")
        return redirect(f"{reverse('calibration:report', args=[agent.name])}?tool={report.tool}")
    messages.success(
        request,
        f"Saved as configuration version {version.number}: check its diff and activate it.",
    )
    return redirect("agents:activate", agent_name=agent.name, number=version.number)
