from __future__ import annotations

from typing import cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from agentdesk.http import HtmxHttpRequest
from agentdesk.prompts import prompt_ref_number
from agentdesk.query import query_form_or_400
from examples.support.models import Ticket
from runs import selectors, services
from runs.forms import SupportTicketForm, TicketPickForm
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
    page = Paginator(runs, PAGE_SIZE)
    context = {
        "page": page.get_page(request.GET.get("page")),
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
    }
    template = "runs/run_detail.html#run-live" if request.htmx else "runs/run_detail.html"
    return render(request, template, context)


@login_required
@require_http_methods(["GET", "POST"])
def run_new(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("runs.add_run"):
        raise PermissionDenied
    form = SupportTicketForm(request.POST or None, initial=_initial_from_ticket(request))
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():  # a ticket filed for a refused run is rolled back
                run, _ = services.run_submit(
                    agent_name=form.cleaned_data["agent"],
                    run_input=form.run_input(),
                    submitted_by=request.user,
                )
        except services.RunInputInvalid as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Run queued.")
            return redirect("runs:detail", run_id=run.id)
    tickets = Ticket.objects.order_by("ticket_id").only("ticket_id", "subject", "tags")
    return render(request, "runs/run_new.html", {"form": form, "tickets": tickets})


def _initial_from_ticket(request: HttpRequest) -> dict[str, str]:
    """Prefill the form from a seeded ticket (``?ticket=T-0007``)."""
    picked = query_form_or_400(TicketPickForm(request.GET)).cleaned_data["ticket"]
    ticket = Ticket.objects.filter(ticket_id=picked).first() if picked else None
    if ticket is None:
        return {"agent": "support"}
    return {
        "agent": "support",
        "ticket_id": ticket.ticket_id,
        "customer_email": ticket.customer_email,
        "subject": ticket.subject,
        "body": ticket.body,
    }


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
