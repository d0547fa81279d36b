from __future__ import annotations

from typing import Any, cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from agentdesk.http import HtmxHttpRequest
from agentdesk.query import query_form_or_400
from agentdesk.schema_forms import field_errors, initial_arguments
from agents.definition import Agent
from agents.registry import agents
from releases.prompts import prompt_ref_number
from runs import presenters, selectors, services
from runs.forms import AGENT_FIELD, RunSubmitForm, SubmitPickForm
from runs.gateway.breakers import (
    breaker_states,
    breaker_thresholds,
    model_breaker_name,
    tool_breaker_name,
)
from runs.models import Degradation, RunState

PAGE_SIZE = 50


@login_required
def run_list(request: HtmxHttpRequest) -> HttpResponse:
    if not request.user.has_perm("runs.view_run"):
        raise PermissionDenied
    state = request.GET.get("state") or None
    if state not in (None, *RunState.values):
        state = None
    degraded = request.GET.get("degraded") or None
    if degraded not in selectors.DEGRADED_FILTERS:
        degraded = None
    runs = selectors.runs_filter_degraded(
        selectors.run_list_visible(user=request.user, state=state), degraded=degraded
    )
    page = Paginator(runs, PAGE_SIZE).get_page(request.GET.get("page"))
    page.object_list = presenters.runs_titled(page.object_list)
    context = {
        "page": page,
        "state": state,
        "states": RunState.choices,
        "degraded": degraded,
        "degradations": Degradation.choices,
    }
    template = "runs/run_list.html#run-table" if request.htmx else "runs/run_list.html"
    return render(request, template, context)


@login_required
def run_detail(request: HtmxHttpRequest, run_id: str) -> HttpResponse:
    view = selectors.run_get_visible(user=request.user, run_id=str(run_id))
    if view is None:
        raise Http404
    run = view.run
    pending = selectors.run_pending_request(run=run)
    context = {
        "run": run,
        "view": view,
        "steps": selectors.run_steps(run=run),
        "pending_request": pending,
        # Waiting on a request in a queue the reader may not open: say so, name nothing.
        "pending_visible": view.shows_request(pending),
        # The stored prompt version the run was told, for a link to it (None: a run from
        # before prompt versions, which recorded a hash of the code's prompt).
        "prompt_number": prompt_ref_number(run.prompt_version),
        "run_title": presenters.run_title(run),
        "input_rows": presenters.input_rows(run),
    }
    template = "runs/run_detail.html#run-live" if request.htmx else "runs/run_detail.html"
    return render(request, template, context)


@login_required
@require_http_methods(["GET", "POST"])
def run_new(request: HttpRequest) -> HttpResponse:
    """The submit page: the chosen agent's input form, generated from its input schema."""
    if not request.user.has_perm("runs.add_run"):
        raise PermissionDenied
    pick = query_form_or_400(SubmitPickForm(request.GET)).cleaned_data
    registered = agents()
    default = next(iter(registered.values()))
    if request.method == "POST":
        # An unknown agent keeps the default's fields; the hidden agent field says why.
        agent = registered.get(str(request.POST.get(AGENT_FIELD, "")), default)
        form = RunSubmitForm(request.POST, agent=agent)
    else:
        agent = registered[pick["agent"]] if pick["agent"] else default
        form = RunSubmitForm(agent=agent, initial=_initial_from_demo(agent, pick["demo"]))
    if request.method == "POST" and form.is_valid():
        try:
            run = services.run_submit_from_page(
                agent_name=form.cleaned_data[AGENT_FIELD],
                run_input=form.arguments(),
                submitted_by=request.user,
            )
        except services.RunInputInvalid as exc:
            form.add_error(None, exc.message)
            if isinstance(exc.details, list):
                form.add_service_errors(field_errors(exc.details))
        else:
            messages.success(request, "Run queued.")
            return redirect("runs:detail", run_id=run.id)
    context = {
        "form": form,
        "agent": agent,
        "agents": list(registered),
        "demos": list(agent.demo_inputs()) if agent.demo_inputs else [],
        "picked": pick["demo"],
    }
    return render(request, "runs/run_new.html", context)


def _initial_from_demo(agent: Agent, key: str) -> dict[str, Any]:
    """The form's initial data from one of the agent's demo inputs (``?demo=T-0007``)."""
    if not key or agent.demo_inputs is None:
        return {}
    demo = next((d for d in agent.demo_inputs() if d.key == key), None)
    if demo is None:
        return {}
    return initial_arguments(demo.input, agent.input_schema.model_json_schema())


@login_required
def dead_letter_list(request: HtmxHttpRequest) -> HttpResponse:
    if not request.user.has_perm("runs.view_deadletter"):
        raise PermissionDenied
    context = {"letters": selectors.dead_letters_open()[:200]}
    return render(request, "runs/dead_letters.html", context)


@login_required
def dead_letter_detail(request: HtmxHttpRequest, letter_id: int) -> HttpResponse:
    if not request.user.has_perm("runs.view_deadletter"):
        raise Http404
    letter = selectors.dead_letter_get(letter_id=letter_id)
    if letter is None:
        raise Http404
    return render(request, "runs/dead_letter_detail.html", {"letter": letter})


@login_required
@require_http_methods(["POST"])
def dead_letter_resolve(request: HtmxHttpRequest, letter_id: int, action: str) -> HttpResponse:
    """Requeue or discard a dead letter; the first person to act wins."""
    if not request.user.has_perm("runs.view_deadletter"):
        raise Http404
    if not request.user.has_perm("runs.change_deadletter"):
        raise PermissionDenied
    resolve = {
        "requeue": services.dead_letter_requeue,
        "discard": services.dead_letter_discard,
    }.get(action)
    if resolve is None or selectors.dead_letter_get(letter_id=letter_id) is None:
        raise Http404
    try:
        resolve(letter_id=letter_id, actor=cast(User, request.user))
    except services.DeadLetterResolved as exc:
        messages.warning(request, str(exc))
    else:
        done = (
            "requeued: it resumes from its last checkpoint" if action == "requeue" else "discarded"
        )
        messages.success(request, f"Dead letter {letter_id} {done}.")
    return redirect("runs:dead-letters")


@login_required
def breaker_list(request: HtmxHttpRequest) -> HttpResponse:
    """The circuit breakers of model endpoints and tools, polled while the page is open."""
    if not request.user.has_perm("runs.view_run"):
        raise PermissionDenied
    context = {
        "breakers": breaker_states(),
        "model": breaker_thresholds(model_breaker_name("default")),
        "tool": breaker_thresholds(tool_breaker_name("any")),
        "cooldown_s": settings.AGENTDESK_BREAKER_COOLDOWN_S,
    }
    template = "runs/breakers.html#breaker-table" if request.htmx else "runs/breakers.html"
    return render(request, template, context)
