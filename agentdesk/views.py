"""The project's own pages: the landing redirect, the audit log, agent configuration.

The audit pages are for holders of the model permission audit.view_auditevent
(auditors and superusers): the log covers every queue and run, so there is no per-object
access to check; anyone else logged in gets 403 and learns nothing, not even a count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
)
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from agentdesk.forms import (
    ActivateForm,
    ConfigForm,
    PromptLabelMoveForm,
    PromptVersionForm,
    RuleFormSet,
    rule_forms_kept,
    rules_from,
)
from agentdesk.http import HtmxHttpRequest
from agentdesk.models import (
    AgentConfigVersion,
    ApiToken,
    PromptLabel,
    PromptLabelMoveKind,
    PromptLabelName,
    PromptVersion,
)
from agentdesk.query import query_number
from agentdesk.tokens import TokenRefused, api_token_revoke, api_tokens_of
from agents.definition import Agent
from agents.registry import UnknownAgent, agent_get, agents
from audit.log import audit_record
from audit.models import AuditVerb
from releases import configuration, prompts
from reviews import selectors as review_selectors


class AuditedLoginView(auth_views.LoginView):
    """Django's login, with the login written to the audit log in the same transaction."""

    def form_valid(self, form: Any) -> HttpResponse:
        with transaction.atomic():
            response = super().form_valid(form)
            audit_record(
                actor=form.get_user(),
                verb=AuditVerb.USER_LOGGED_IN,
                object_type="user",
                object_id=str(form.get_user().pk),
            )
        return response


class AuditedLogoutView(auth_views.LogoutView):
    """Django's logout (POST only), written to the audit log first."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = request.user
        with transaction.atomic():
            if user.is_authenticated:
                audit_record(
                    actor=user,
                    verb=AuditVerb.USER_LOGGED_OUT,
                    object_type="user",
                    object_id=str(user.pk),
                )
            return super().post(request, *args, **kwargs)


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Reviewers land in their inbox; everyone else on the runs list."""
    if review_selectors.queue_ids_decidable(user=request.user):
        return redirect("reviews:inbox")
    return redirect("runs:list")


# --- agent configuration, for operators ------------------------------------------------------
#
# Holders of agentdesk.view_agentconfigversion (operators, auditors) see every agent's
# versions; agentdesk.change_agentconfigversion (operators) creates and activates them.
# Without view: 403 on the list, 404 on an agent's pages (nothing about it is revealed).
# With view but without change: 403 on the form and every POST, and nothing changes.

VIEW_CONFIG = "agentdesk.view_agentconfigversion"
CHANGE_CONFIG = "agentdesk.change_agentconfigversion"


def _config_agent(request: HttpRequest, agent_name: str) -> Agent:
    """The agent whose configuration the user may see, else 404."""
    if not request.user.has_perm(VIEW_CONFIG):
        raise Http404
    try:
        return agent_get(agent_name)
    except UnknownAgent:
        raise Http404 from None


def _require_config_change(request: HttpRequest) -> None:
    if not request.user.has_perm(CHANGE_CONFIG):
        raise PermissionDenied


def _version_or_404(agent: Agent, number: int) -> AgentConfigVersion:
    version = configuration.config_version_get(agent_name=agent.name, number=number)
    if version is None:
        raise Http404
    return version


@login_required
def agent_list(request: HttpRequest) -> HttpResponse:
    """Every registered agent and its active configuration version."""
    if not request.user.has_perm(VIEW_CONFIG):
        raise PermissionDenied
    rows = [
        (agent, configuration.config_active(agent_name=agent.name))
        for agent in sorted(agents().values(), key=lambda a: a.name)
    ]
    return render(request, "agents/list.html", {"rows": rows})


@login_required
def agent_detail(request: HttpRequest, agent_name: str) -> HttpResponse:
    """An agent's versions, newest first, with diff and activation."""
    agent = _config_agent(request, agent_name)
    active = configuration.config_active(agent_name=agent.name)
    versions = configuration.config_versions(agent_name=agent.name)
    return render(
        request,
        "agents/detail.html",
        {
            "agent": agent,
            "active": active,
            "config": configuration.config_effective(version=active),
            "versions": versions,
            "can_change": request.user.has_perm(CHANGE_CONFIG),
        },
    )


@login_required
def agent_version(request: HtmxHttpRequest, agent_name: str, number: int) -> HttpResponse:
    """One version and its diff against the active one (or ``?against=<number>``)."""
    agent = _config_agent(request, agent_name)
    version = _version_or_404(agent, number)
    active = configuration.config_active(agent_name=agent.name)
    against = active
    if (other := query_number(request.GET, "against")) is not None:
        against = _version_or_404(agent, other)
    context = {
        "agent": agent,
        "version": version,
        "config": configuration.config_effective(version=version),
        "active": active,
        "against": against,
        "diff": configuration.config_diff(a=against, b=version),
        "can_change": request.user.has_perm(CHANGE_CONFIG),
    }
    template = "agents/version.html#diff" if request.htmx else "agents/version.html"
    return render(request, template, context)


@login_required
def agent_version_activate(request: HttpRequest, agent_name: str, number: int) -> HttpResponse:
    """Activate a version (newer, or earlier: a rollback), once the operator confirmed.

    GET shows the confirmation: the diff against the active version and a button that
    posts it back. A POST without the confirmation re-renders it (400); one confirmed
    against a version that is no longer active re-renders it against the new one (409).
    Works without JavaScript; nothing changes until a confirmed POST.
    """
    agent = _config_agent(request, agent_name)
    _require_config_change(request)
    version = _version_or_404(agent, number)
    active = configuration.config_active(agent_name=agent.name)
    notice, status = "", 200
    if request.method == "POST":
        form = ActivateForm(request.POST)
        if not form.is_valid():
            notice, status = "Check the changes below, then confirm the activation.", 400
        else:
            try:
                configuration.config_activate(
                    agent_name=agent.name,
                    number=number,
                    user=cast(User, request.user),
                    expected_active=form.cleaned_data["expected_active"],
                )
            except configuration.ActiveChanged as exc:
                notice, status = str(exc), 409
                active = configuration.config_active(agent_name=agent.name)
            except configuration.ConfigRefused as exc:
                messages.error(request, str(exc))
                return redirect("agents:detail", agent_name=agent.name)
            else:
                verb = "Rolled back to" if number < active.number else "Activated"
                messages.success(request, f"{verb} version {number}; new runs use it.")
                return redirect("agents:detail", agent_name=agent.name)
    elif request.method != "GET":
        return HttpResponseNotAllowed(["GET", "POST"])
    context = {
        "agent": agent,
        "version": version,
        "active": active,
        "against": active,
        "diff": configuration.config_diff(a=active, b=version),
        "missing": configuration.queues_missing(
            run_config=configuration.config_of_version(version=version, agent=agent)
        ),
        "form": ActivateForm(initial={"confirm": True, "expected_active": active.number}),
        "notice": notice,
    }
    return render(request, "agents/activate.html", context, status=status)


@login_required
def agent_version_new(request: HttpRequest, agent_name: str) -> HttpResponse:
    """A new version, starting from the active one; saved only if all of it is valid."""
    agent = _config_agent(request, agent_name)
    _require_config_change(request)
    active = configuration.config_active(agent_name=agent.name)
    tools = [tool.name for tool in agent.tools]
    kinds = list(agent.task_kinds)
    summary: list[tuple[str, str]] = []
    if request.method == "POST":
        form = ConfigForm(request.POST, tools=tools, kinds=kinds)
        rules = RuleFormSet(request.POST, prefix="rules", form_kwargs={"tools": tools})
        valid = form.is_valid() & rules.is_valid()  # both: every field's error at once
        kept = rule_forms_kept(rules)
        config = form.config(rules_from(rules))
        try:
            if valid:
                version = configuration.config_version_create(
                    agent_name=agent.name,
                    config=config,
                    note=form.cleaned_data["note"],
                    user=cast(User, request.user),
                )
            else:
                # Saves nothing; checks the valid fields, so that the rules' CEL, the
                # endpoints and the queues are reported in this round, beside the form's.
                configuration.config_validate(agent_name=agent.name, config=config)
        except configuration.ConfigRefused as exc:
            form.show_refusal(exc, kept)
        else:
            if valid:
                messages.success(
                    request,
                    f"Saved version {version.number}. It is not active yet: check the "
                    "diff below, then activate it.",
                )
                return redirect("agents:version", agent_name=agent.name, number=version.number)
        summary = form.error_summary(rules, kept)
        status = 400
    else:
        # From what the active version means for runs: one stored before limits and
        # tiers were part of a version shows the code's, which its runs use.
        config = configuration.config_effective(version=active)
        form = ConfigForm(
            initial=ConfigForm.initial_from(config, tools, kinds), tools=tools, kinds=kinds
        )
        rules = RuleFormSet(
            prefix="rules",
            form_kwargs={"tools": tools},
            initial=[{**rule, "queue": rule.get("queue") or ""} for rule in config["rules"]],
        )
        status = 200
    return render(
        request,
        "agents/new.html",
        {"agent": agent, "active": active, "form": form, "rules": rules, "summary": summary},
        status=status,
    )


# --- prompt versions, for operators ----------------------------------------------------------
#
# Holders of agentdesk.view_promptversion (operators, release managers, auditors) see every
# agent's prompt versions and labels; agentdesk.change_promptversion (operators) creates
# versions and moves dev and staging; agentdesk.promote_production_prompt (release
# managers, superusers) moves production. Without view: 403 on the list, 404 on an agent's
# pages. With view but without what a write needs: 403, and nothing changes.


def _prompt_agent(request: HttpRequest, agent_name: str) -> Agent:
    """The agent whose prompts the user may see, else 404."""
    if not request.user.has_perm(prompts.VIEW_PROMPTS):
        raise Http404
    try:
        return agent_get(agent_name)
    except UnknownAgent:
        raise Http404 from None


def _prompt_version_or_404(agent: Agent, number: int) -> PromptVersion:
    version = prompts.prompt_version_get(agent_name=agent.name, number=number)
    if version is None:
        raise Http404
    return version


def _may_move(request: HttpRequest, label: str) -> bool:
    return request.user.has_perm(prompts.prompt_move_permission(label=label))


@dataclass(frozen=True)
class LabelCard:
    """One label on the prompt page, and the moves this user may make from there."""

    row: PromptLabel
    source: str  # the label a promotion comes from; "" for dev
    promote_to: PromptVersion | None  # the source's version, when it differs
    rollback_to: list[PromptVersion]
    may_move: bool


@login_required
def prompt_list(request: HttpRequest) -> HttpResponse:
    """Every registered agent and where its prompt labels point."""
    if not request.user.has_perm(prompts.VIEW_PROMPTS):
        raise PermissionDenied
    rows = [
        (agent, prompts.prompt_label_rows(agent_name=agent.name))
        for agent in sorted(agents().values(), key=lambda a: a.name)
    ]
    return render(request, "prompts/list.html", {"rows": rows, "labels": prompts.LABELS})


@login_required
def prompt_detail(request: HttpRequest, agent_name: str) -> HttpResponse:
    """An agent's prompt labels (promote, roll back), its versions and the label history."""
    agent = _prompt_agent(request, agent_name)
    rows = prompts.prompt_label_rows(agent_name=agent.name)
    by_label = {row.label: row.version for row in rows}
    cards = []
    for row in rows:
        source = prompts.PROMOTED_FROM.get(PromptLabelName(row.label))
        promote_to = by_label[source] if source else None
        if promote_to is not None and promote_to.pk == row.version_id:
            promote_to = None
        previous = (
            prompts.prompt_label_previous(agent_name=agent.name, label=row.label) if source else []
        )
        cards.append(
            LabelCard(
                row=row,
                source=source or "",
                promote_to=promote_to,
                # The version a promotion offers is not offered again as a rollback: moving
                # there is a promotion (through the gate) either way.
                rollback_to=[v for v in previous if v != promote_to],
                may_move=_may_move(request, row.label),
            )
        )
    versions = prompts.prompt_versions(agent_name=agent.name)
    labels_of = {
        version.pk: [row.label for row in rows if row.version_id == version.pk]
        for version in versions
    }
    return render(
        request,
        "prompts/detail.html",
        {
            "agent": agent,
            "cards": cards,
            "production": by_label[PromptLabelName.PRODUCTION],
            "dev": by_label[PromptLabelName.DEV],
            "versions": [(version, labels_of[version.pk]) for version in versions],
            "history": prompts.prompt_label_history(agent_name=agent.name),
            "code_version": prompts.prompt_code_version(agent=agent),
            "placeholders": sorted(agent.allowed_placeholders),
            "can_change": request.user.has_perm(prompts.CHANGE_PROMPTS),
        },
    )


@login_required
def prompt_version(request: HtmxHttpRequest, agent_name: str, number: int) -> HttpResponse:
    """One prompt version and its diff against production (or ``?against=<number>``)."""
    agent = _prompt_agent(request, agent_name)
    version = _prompt_version_or_404(agent, number)
    rows = prompts.prompt_label_rows(agent_name=agent.name)
    production = next(r.version for r in rows if r.label == PromptLabelName.PRODUCTION)
    against = production
    if (other := query_number(request.GET, "against")) is not None:
        against = _prompt_version_or_404(agent, other)
    context = {
        "agent": agent,
        "version": version,
        "labels": [row.label for row in rows if row.version_id == version.pk],
        "dev": next(r.version for r in rows if r.label == PromptLabelName.DEV),
        "production": production,
        "against": against,
        "diff": prompts.prompt_diff(a=against, b=version),
        "can_change": request.user.has_perm(prompts.CHANGE_PROMPTS),
    }
    template = "prompts/version.html#diff" if request.htmx else "prompts/version.html"
    return render(request, template, context)


@login_required
def prompt_version_new(request: HttpRequest, agent_name: str) -> HttpResponse:
    """A new prompt version, starting from dev's (``?from=<number>`` or ``?from=code``)."""
    agent = _prompt_agent(request, agent_name)
    if not request.user.has_perm(prompts.CHANGE_PROMPTS):
        raise PermissionDenied
    start = prompts.prompt_labels(agent_name=agent.name)[PromptLabelName.DEV]
    if request.method == "POST":
        form = PromptVersionForm(request.POST)
        if form.is_valid():
            try:
                version = prompts.prompt_version_create(
                    agent_name=agent.name,
                    template=form.cleaned_data["template"],
                    note=form.cleaned_data["note"],
                    user=cast(User, request.user),
                )
            except prompts.PromptRefused as exc:
                form.add_error("template", str(exc))
            else:
                messages.success(
                    request,
                    f"Saved version {version.number}. No label points at it yet: point dev "
                    "at it to try it, then promote it.",
                )
                return redirect("prompts:version", agent_name=agent.name, number=version.number)
        status = 400
    else:
        initial = start.template
        if request.GET.get("from") == "code":
            initial = prompts.prompt_canonical(template=agent.system_prompt)
        elif (number := query_number(request.GET, "from")) is not None:
            start = _prompt_version_or_404(agent, number)
            initial = start.template
        form = PromptVersionForm(initial={"template": initial})
        status = 200
    return render(
        request,
        "prompts/new.html",
        {"agent": agent, "form": form, "placeholders": sorted(agent.allowed_placeholders)},
        status=status,
    )


_MOVED = {
    PromptLabelMoveKind.PROMOTION: "Promoted version {n} to {label}.",
    PromptLabelMoveKind.ROLLBACK: "Rolled {label} back to version {n}.",
    PromptLabelMoveKind.MOVE: "{label} now points at version {n}.",
}


@login_required
@require_POST
def prompt_label_move(request: HttpRequest, agent_name: str) -> HttpResponse:
    """Move a label: promote, roll back, or point dev at a version."""
    agent = _prompt_agent(request, agent_name)
    user = request.user
    if not (user.has_perm(prompts.CHANGE_PROMPTS) or user.has_perm(prompts.PROMOTE_PRODUCTION)):
        raise PermissionDenied
    form = PromptLabelMoveForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a label and a version number to move it to.")
        return redirect("prompts:detail", agent_name=agent.name)
    label = form.cleaned_data["label"]
    if label in PromptLabelName.values and not _may_move(request, label):
        raise PermissionDenied
    try:
        move = prompts.prompt_label_move(
            agent_name=agent.name,
            label=label,
            number=form.cleaned_data["number"],
            user=cast(User, user),
        )
    except prompts.PromptRefused as exc:
        messages.error(request, str(exc))
    else:
        text = _MOVED[PromptLabelMoveKind(move.kind)].format(
            n=move.to_version.number, label=move.label
        )
        if move.label == PromptLabelName.PRODUCTION:
            text += " New runs use it; runs in flight keep the version they started with."
        if move.gate:
            text += f" Gate: {move.gate}."
        messages.success(request, text)
    return redirect("prompts:detail", agent_name=agent.name)


# --- API tokens: each person's own -------------------------------------------------------------


@login_required
def token_list(request: HttpRequest) -> HttpResponse:
    """The logged-in person's API tokens (never their keys), with a revoke button each."""
    now = timezone.now()
    tokens = [(token, token.status(now)) for token in api_tokens_of(user=cast(User, request.user))]
    return render(request, "tokens/list.html", {"tokens": tokens})


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """Revoke one of one's own tokens; another person's is a 404, and nothing changes."""
    user = cast(User, request.user)
    try:
        token = api_token_revoke(token_id=token_id, actor=user, owner=user)
    except ApiToken.DoesNotExist:
        raise Http404 from None
    except TokenRefused as exc:
        messages.info(request, str(exc))
    else:
        messages.success(request, f"Revoked {token.name} ({token.prefix}…): it no longer works.")
    return redirect("tokens:list")


def admin_view_on_site(
    request: HttpRequest, content_type_id: str, object_id: str
) -> HttpResponseBase:
    """The admin's "view on site" redirect, with a 404 for an id its model cannot hold.

    Django's own (``contenttypes.views.shortcut``) lets the ValidationError of a malformed
    UUID (a run's id) escape as a 500.
    """
    from django.contrib.contenttypes.views import shortcut
    from django.core.exceptions import ValidationError

    try:
        return shortcut(request, content_type_id, object_id)
    except (ValidationError, ValueError):
        raise Http404("No object with that id.") from None
