"""The reviewers' pages: the inbox, a request's detail pane, decisions, queues, candidates.

Each view checks access first (not visible: 404; visible without decide: 403, nothing
changes), validates a form, calls one service and renders or redirects. With htmx a
decision re-renders the detail pane, showing the outcome, and fires ``inbox-changed`` so
the list refreshes; without JavaScript it redirects to the inbox with a message.

Refusals under htmx come back as 200 with the message in the pane (htmx does not swap
4xx responses by default, and the pane is where the reviewer looks); without htmx they
are 409 (someone decided first), 403 (separation of duties: the reviewer submitted the
run, or approved these arguments already) or 400 (a refused or invalid decision).
"""

from __future__ import annotations

import re
from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_POST
from django_htmx.http import trigger_client_event

from agentdesk.http import HtmxHttpRequest
from agentdesk.query import query_form_or_400
from agents.definition import Risk
from agents.registry import agents
from reviews import access, presenters, selectors, services
from reviews.forms import (
    BulkApproveForm,
    DecisionForm,
    EscalateForm,
    InboxFilterForm,
    MemberForm,
    RejectForm,
)
from reviews.models import ApprovalRequest, DecisionKind, Queue

PAGE_SIZE = 50
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
CHANGED_EVENT = "inbox-changed"  # the list listens for it (hx-trigger "... from:body")
POLL_SECONDS = 5


# --- the inbox -----------------------------------------------------------------------------


@login_required
def inbox(request: HtmxHttpRequest) -> HttpResponse:
    """Pending requests of the queues the user sees; with htmx, the list alone."""
    user = request.user
    filters = query_form_or_400(InboxFilterForm(request.GET)).filters()
    queues = selectors.queues_visible(user=user)
    queue_ids = [queue.pk for queue in queues]
    decidable = (
        set(selectors.queue_ids_decidable(user=user, visible=queue_ids)) if queue_ids else set()
    )
    requests = selectors.inbox_requests(queue_ids=queue_ids, filters=filters)
    page = Paginator(requests, PAGE_SIZE).get_page(request.GET.get("page"))
    now = timezone.now()
    # One reverse() per page rather than two per row: the list is re-rendered on every
    # live update, and URL reversing is a measurable share of its time.
    detail_url = reverse("reviews:detail", args=[0])
    rows = [
        presenters.inbox_row(approval, now=now, decidable=decidable, detail_url=detail_url)
        for approval in page.object_list
    ]
    params = urlencode(filters.as_query())
    list_url = reverse("reviews:inbox")
    context = {
        "page": page,
        "rows": rows,
        "filters": filters,
        "query": params,
        "list_url": f"{list_url}?{params}{'&' if params else ''}page={page.number}",
        "queues": queues,
        "agents": sorted(agents()),
        "tools": sorted({tool.name for agent in agents().values() for tool in agent.tools}),
        "risks": [risk.value for risk in Risk],
        "ages": selectors.AGE_CHOICES,
        "live": presenters.live_mode(),
        "poll_seconds": POLL_SECONDS,
        "socket_queues": [filters.queue] if filters.queue in queue_ids else queue_ids,
        "any_decidable": bool(decidable),
    }
    template = "reviews/_list.html" if request.htmx else "reviews/inbox.html"
    return render(request, template, context)


# --- one request ---------------------------------------------------------------------------


def _visible_or_404(request: HtmxHttpRequest, request_id: int) -> ApprovalRequest:
    approval = selectors.request_get_visible(user=request.user, request_id=request_id)
    if approval is None:
        raise Http404
    return approval


def _decidable_or_403(request: HtmxHttpRequest, request_id: int) -> ApprovalRequest:
    approval = _visible_or_404(request, request_id)
    if not selectors.can_decide(user=request.user, request=approval):
        raise PermissionDenied
    return approval


def _pane(
    request: HtmxHttpRequest, approval: ApprovalRequest, *, status: int = 200, **extra: Any
) -> HttpResponse:
    """The detail pane under htmx, the full detail page otherwise."""
    context = presenters.detail_context(request, approval, **extra)
    if request.htmx:
        return render(request, "reviews/_detail.html", context)
    return render(request, "reviews/detail.html", context, status=status)


@login_required
def request_detail(request: HtmxHttpRequest, request_id: int) -> HttpResponse:
    return _pane(request, _visible_or_404(request, request_id))


@login_required
@require_POST
def request_claim(request: HtmxHttpRequest, request_id: int) -> HttpResponse:
    """Claim for a few minutes (advisory: it tells others who is on it).

    Not for someone barred from deciding it (their own run): their claim would tell the
    people who may decide that it is taken.
    """
    approval = _decidable_or_403(request, request_id)
    if services.decider_barrier(request=approval, user=request.user):
        raise PermissionDenied
    approval = services.approval_claim(request_id=request_id, user=cast(User, request.user))
    if not request.htmx:
        return redirect("reviews:detail", request_id=request_id)
    approval = _visible_or_404(request, request_id)
    context = {
        "approval": approval,
        "claimed_by": presenters.claimer(approval, timezone.now()),
        "can_decide": approval.is_pending,
    }
    return render(request, "reviews/_claim.html", context)


def _refused(
    request: HtmxHttpRequest, request_id: int, exc: services.DecisionRefused, **forms: Any
) -> HttpResponse:
    approval = _visible_or_404(request, request_id)
    already = isinstance(exc, services.AlreadyDecided)
    # Separation of duties is a refusal of the person, not of their input: 403.
    status = 409 if already else 403 if isinstance(exc, services.DutyRefused) else 400
    response = _pane(
        request,
        approval,
        status=status,
        notice=exc.message,
        notice_kind="warning" if already else "error",
        **forms,
    )
    if already and request.htmx:
        trigger_client_event(response, CHANGED_EVENT, {"request": request_id})
    return response


def _decided(request: HtmxHttpRequest, outcome: services.Outcome, done: str) -> HttpResponse:
    approval_id = outcome.request.pk
    if not outcome.completed and outcome.decision.kind != DecisionKind.ESCALATE:
        needed = outcome.request.approvals_required
        done += f" ({needed} approvals needed: waiting for another reviewer)"
    if not request.htmx:
        messages.success(request, f"Request {approval_id}: {done}.")
        return redirect("reviews:inbox")
    approval = selectors.request_get_visible(user=request.user, request_id=approval_id)
    if approval is None:  # escalated to a queue this reviewer does not see
        response = render(request, "reviews/_gone.html", {"notice": done})
    else:
        response = _pane(
            request, approval, notice=f"{done[:1].upper()}{done[1:]}.", notice_kind="success"
        )
    return trigger_client_event(response, CHANGED_EVENT, {"request": approval_id})


@login_required
@require_POST
def request_approve(request: HtmxHttpRequest, request_id: int) -> HttpResponse:
    approval = _decidable_or_403(request, request_id)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        return _pane(request, approval, status=400, notice="Reload the request and try again.")
    try:
        outcome = services.approval_approve(
            request_id=request_id,
            user=cast(User, request.user),
            seen_hash=form.cleaned_data["args_hash"],
            reason=form.cleaned_data["note"],
        )
    except services.DecisionRefused as exc:
        return _refused(request, request_id, exc)
    return _decided(request, outcome, "approved")


@login_required
@require_POST
def request_edit(request: HtmxHttpRequest, request_id: int) -> HttpResponse:
    """Approve with edited arguments; invalid input shows on the form and saves nothing."""
    approval = _decidable_or_403(request, request_id)
    edit_form = presenters.edit_form(approval, request.POST)
    meta = DecisionForm(request.POST, prefix="edit")
    if edit_form is None:
        return _pane(
            request,
            approval,
            status=400,
            notice=f"The agent no longer has the tool {approval.tool}: it cannot be edited.",
            notice_kind="error",
        )
    bound = {"edit_form": edit_form, "edit_meta": meta, "open_form": "edit"}
    if not (edit_form.is_valid() and meta.is_valid()):
        return _pane(
            request,
            approval,
            status=400,
            notice="Fix the highlighted fields.",
            notice_kind="error",
            **bound,
        )
    try:
        outcome = services.approval_edit(
            request_id=request_id,
            user=cast(User, request.user),
            seen_hash=meta.cleaned_data["args_hash"],
            arguments=edit_form.arguments(),
            reason=meta.cleaned_data["note"],
        )
    except services.DecisionRefused as exc:
        edit_form.add_service_errors(exc.field_errors)
        return _refused(request, request_id, exc, **bound)
    return _decided(request, outcome, "approved with your edits")


@login_required
@require_POST
def request_reject(request: HtmxHttpRequest, request_id: int) -> HttpResponse:
    approval = _decidable_or_403(request, request_id)
    form = RejectForm(request.POST)
    bound = {"reject_form": form, "open_form": "reject"}
    if not form.is_valid():
        return _pane(
            request,
            approval,
            status=400,
            notice="Say why: the feedback goes back to the agent.",
            notice_kind="error",
            **bound,
        )
    try:
        outcome = services.approval_reject(
            request_id=request_id,
            user=cast(User, request.user),
            feedback=form.cleaned_data["feedback"],
        )
    except services.DecisionRefused as exc:
        return _refused(request, request_id, exc, **bound)
    return _decided(request, outcome, "rejected; the agent gets your feedback")


@login_required
@require_POST
def request_escalate(request: HtmxHttpRequest, request_id: int) -> HttpResponse:
    approval = _decidable_or_403(request, request_id)
    targets = selectors.escalation_targets(request=approval, user=request.user)
    form = EscalateForm(request.POST, targets=targets)
    bound = {"escalate_form": form, "open_form": "escalate"}
    if not form.is_valid():
        return _pane(
            request,
            approval,
            status=400,
            notice="Choose a queue and say why.",
            notice_kind="error",
            **bound,
        )
    to_queue: Queue = form.cleaned_data["to_queue"]
    try:
        outcome = services.approval_escalate(
            request_id=request_id,
            user=cast(User, request.user),
            to_queue=to_queue,
            reason=form.cleaned_data["reason"],
        )
    except services.DecisionRefused as exc:
        return _refused(request, request_id, exc, **bound)
    label = next(target.label for target in targets if target.queue.pk == to_queue.pk)
    return _decided(request, outcome, f"escalated to {label}")


@login_required
@require_POST
def bulk_approve(request: HtmxHttpRequest) -> HttpResponse:
    """Approve the selected rows at once: low-risk, one tool, one rule, all or nothing."""
    form = BulkApproveForm(request.POST)
    if not form.is_valid():
        return _bulk_result(request, "Select at least one request.", ok=False)
    ids: list[int] = form.cleaned_data["ids"]
    found = selectors.requests_for_bulk(request_ids=ids)
    visible = set(selectors.queue_ids_visible(user=request.user))
    if len(found) != len(set(ids)) or any(r.queue_id not in visible for r in found):
        raise Http404
    decidable = set(selectors.queue_ids_decidable(user=request.user))
    if any(r.queue_id not in decidable for r in found):
        raise PermissionDenied
    try:
        outcomes = services.approval_bulk_approve(
            request_ids=ids, user=cast(User, request.user), seen_hashes=form.seen_hashes()
        )
    except services.DecisionRefused as exc:
        return _bulk_result(request, exc.message, ok=False)
    return _bulk_result(request, f"Approved {len(outcomes)} requests.", ok=True)


def _bulk_result(request: HtmxHttpRequest, notice: str, *, ok: bool) -> HttpResponse:
    if not request.htmx:
        (messages.success if ok else messages.error)(request, notice)
        return redirect("reviews:inbox")
    response = render(
        request,
        "reviews/_gone.html",
        {"notice": notice, "notice_kind": "success" if ok else "error"},
    )
    return trigger_client_event(response, CHANGED_EVENT, {"bulk": ok})


# --- candidates and queues -----------------------------------------------------------------


@login_required
def candidate_list(request: HtmxHttpRequest) -> HttpResponse:
    if not request.user.has_perm("reviews.view_goldencandidate"):
        raise PermissionDenied
    candidates = selectors.candidates_list(user=request.user)
    page = Paginator(candidates, PAGE_SIZE).get_page(request.GET.get("page"))
    visible = set(selectors.queue_ids_visible(user=request.user))
    rows = []
    for candidate in page.object_list:
        proposed = (candidate.proposal or {}).get("arguments") or {}
        corrected = (candidate.correction or {}).get("arguments") or {}
        rows.append(
            {
                "candidate": candidate,
                "proposed": list(proposed.items()) if isinstance(proposed, dict) else [],
                "corrected": [
                    (key, value, proposed.get(key) != value) for key, value in corrected.items()
                ]
                if isinstance(corrected, dict) and isinstance(proposed, dict)
                else [],
                "request_visible": candidate.request.queue_id in visible,
            }
        )
    context = {"page": page, "rows": rows, "run_visible": request.user.has_perm("runs.view_run")}
    return render(request, "reviews/candidates.html", context)


@login_required
def queue_list(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, "reviews/queues.html", {"rows": selectors.queue_rows(user=request.user)})


@login_required
def queue_members(request: HtmxHttpRequest, queue_id: int) -> HttpResponse:
    """Who may see and decide in a queue; operators look, admins grant and revoke here.

    A POST from someone who may not manage queue access is 403, audited as refused; a
    grant to oneself (or one's group) is 400, audited as refused; neither changes access.
    """
    queue = selectors.queue_get_manageable(user=request.user, queue_id=queue_id)
    if queue is None:
        raise Http404
    if not selectors.can_manage_queues(user=request.user):
        raise PermissionDenied
    actor = cast(User, request.user)
    may_grant = access.can_manage_access(user=actor)
    if request.method == "POST" and not may_grant:
        access.queue_permission_refused(
            actor=actor,
            queue=queue,
            asked_for=str(request.POST.get("principal", "")),
            permission=f"{request.POST.get('action', '')} {request.POST.get('level', '')}"[:40],
            reason=access.NOT_AN_ADMIN,
        )
        raise PermissionDenied
    form = MemberForm(request.POST or None, initial={"action": "grant", "level": "decide"})
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            granted = form.cleaned_data["action"] == "grant"
            principal = form.cleaned_data["principal"]
            try:
                changed = access.queue_permission_set(
                    actor=actor,
                    queue=queue,
                    principal=principal,
                    level=form.cleaned_data["level"],
                    granted=granted,
                )
            except access.AccessRefused as exc:
                form.add_error(None, exc.message)
            else:
                name = getattr(principal, "username", None) or f"group {principal.name}"
                if changed:
                    verb = "granted" if granted else "revoked"
                    messages.success(
                        request, f"{verb.capitalize()} {', '.join(changed)} for {name}."
                    )
                else:
                    messages.info(request, f"Nothing to change for {name}.")
                return redirect("reviews:members", queue_id=queue.pk)
    context = {
        "queue": queue,
        "members": selectors.queue_members(queue=queue),
        "form": form,
        "groups": selectors.groups_all(),
        "can_manage_access": may_grant,
    }
    return render(request, "reviews/members.html", context, status=status)
