"""Pages of configuration versions, prompt versions and the releases that pin them.

Configuration and prompt versions are immutable content, made on their pages; which of
them runs is a release's business: the release pages move the dev, staging and
production labels (promote, roll back), and the configuration page's activation is a
move of production to its prompt with another configuration (``releases.services``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from agentdesk.http import HtmxHttpRequest
from agentdesk.query import query_number
from agents.definition import Agent
from agents.registry import UnknownAgent, agent_get, agents
from releases import configuration, prompts, services
from releases.forms import (
    ActivateForm,
    ConfigForm,
    LabelMoveForm,
    PromptVersionForm,
    ReleaseForm,
    RuleFormSet,
    TryPromptForm,
    rule_forms_kept,
    rules_from,
)
from releases.gate import GateResult, promotion_gate
from releases.models import (
    AgentConfigVersion,
    LabelName,
    MoveKind,
    PromptVersion,
    Release,
    ReleaseLabel,
)

# --- agent configuration, for operators ------------------------------------------------------
#
# Holders of releases.view_agentconfigversion (operators, auditors) see every agent's
# versions; releases.change_agentconfigversion (operators) creates them and activates one
# in production (a move of the production label, through the release service).
# Without view: 403 on the list, 404 on an agent's pages (nothing about it is revealed).
# With view but without change: 403 on the form and every POST, and nothing changes.

VIEW_CONFIG = "releases.view_agentconfigversion"
CHANGE_CONFIG = services.ACTIVATE_CONFIG


def _active(agent_name: str) -> AgentConfigVersion:
    """The configuration new runs use: the production release's."""
    return services.release_production(agent_name=agent_name).config_version


_Numbered = TypeVar("_Numbered", AgentConfigVersion, PromptVersion, Release)


def _agent_or_404(request: HttpRequest, agent_name: str, *, view: str) -> Agent:
    """The agent whose versions (or releases) the user may see with ``view``, else 404."""
    if not request.user.has_perm(view):
        raise Http404
    try:
        return agent_get(agent_name)
    except UnknownAgent:
        raise Http404 from None


def _found(found: _Numbered | None) -> _Numbered:
    """A numbered version or release of the agent, else 404."""
    if found is None:
        raise Http404
    return found


def _config_agent(request: HttpRequest, agent_name: str) -> Agent:
    return _agent_or_404(request, agent_name, view=VIEW_CONFIG)


def _version_or_404(agent: Agent, number: int) -> AgentConfigVersion:
    return _found(configuration.config_version_get(agent_name=agent.name, number=number))


def _prompt_agent(request: HttpRequest, agent_name: str) -> Agent:
    return _agent_or_404(request, agent_name, view=prompts.VIEW_PROMPTS)


def _prompt_version_or_404(agent: Agent, number: int) -> PromptVersion:
    return _found(prompts.prompt_version_get(agent_name=agent.name, number=number))


def _release_agent(request: HttpRequest, agent_name: str) -> Agent:
    return _agent_or_404(request, agent_name, view=services.VIEW_RELEASES)


def _release_or_404(agent: Agent, number: int) -> Release:
    return _found(services.release_get(agent_name=agent.name, number=number))


def _require_config_change(request: HttpRequest) -> None:
    if not request.user.has_perm(CHANGE_CONFIG):
        raise PermissionDenied


@login_required
def agent_list(request: HttpRequest) -> HttpResponse:
    """Every registered agent and its active configuration version."""
    if not request.user.has_perm(VIEW_CONFIG):
        raise PermissionDenied
    rows = [
        (agent, _active(agent.name)) for agent in sorted(agents().values(), key=lambda a: a.name)
    ]
    return render(request, "agents/list.html", {"rows": rows})


@login_required
def agent_detail(request: HttpRequest, agent_name: str) -> HttpResponse:
    """An agent's versions, newest first, with diff and activation."""
    agent = _config_agent(request, agent_name)
    active = _active(agent.name)
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
    active = _active(agent.name)
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
    production = services.release_production(agent_name=agent.name)
    active = production.config_version
    notice, status = "", 200
    if request.method == "POST":
        form = ActivateForm(request.POST)
        if not form.is_valid():
            notice, status = "Check the changes below, then confirm the activation.", 400
        else:
            try:
                move = services.release_activate_config(
                    agent_name=agent.name,
                    number=number,
                    user=cast(User, request.user),
                    expected_active=form.cleaned_data["expected_active"],
                    expected_release=form.cleaned_data["expected_release"],
                    override_reason=form.cleaned_data["override_reason"]
                    if request.user.has_perm(services.OVERRIDE_GATE)
                    else "",
                )
            except services.LabelChanged as exc:
                notice, status = str(exc), 409
                production = services.release_production(agent_name=agent.name)
                active = production.config_version
            except services.ReleaseRefused as exc:
                messages.error(request, str(exc))
                return redirect("agents:detail", agent_name=agent.name)
            else:
                # The move's kind, not the numbers: an older version that never served is
                # an activation (through the gate), a newer one that did is a rollback.
                verb = "Rolled back to" if move.kind == MoveKind.ROLLBACK else "Activated"
                messages.success(
                    request,
                    f"{verb} version {number}; new runs use it (production is now release "
                    f"{move.to_release.number}).",
                )
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
        "form": ActivateForm(
            initial={
                "confirm": True,
                "expected_active": active.number,
                "expected_release": production.number,
            }
        ),
        "production": production,
        "may_override": request.user.has_perm(services.OVERRIDE_GATE),
        "notice": notice,
    }
    return render(request, "agents/activate.html", context, status=status)


@login_required
def agent_version_new(request: HttpRequest, agent_name: str) -> HttpResponse:
    """A new version, starting from the active one; saved only if all of it is valid."""
    agent = _config_agent(request, agent_name)
    _require_config_change(request)
    active = _active(agent.name)
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
# Holders of releases.view_promptversion (operators, release managers, auditors) see every
# agent's prompt versions; releases.change_promptversion (operators) creates them, and
# releases.change_release points dev at one. Labels are moved on the release pages.
# Without view: 403 on the list, 404 on an agent's pages. With view but without what a
# write needs: 403, and nothing changes.


def _labels_of(rows: list[ReleaseLabel], prompt_version: PromptVersion) -> list[str]:
    return [row.label for row in rows if row.release.prompt_version_id == prompt_version.pk]


@login_required
def prompt_list(request: HttpRequest) -> HttpResponse:
    """Every registered agent and the prompt version of each label's release."""
    if not request.user.has_perm(prompts.VIEW_PROMPTS):
        raise PermissionDenied
    rows = [
        (agent, services.release_label_rows(agent_name=agent.name))
        for agent in sorted(agents().values(), key=lambda a: a.name)
    ]
    return render(request, "prompts/list.html", {"rows": rows, "labels": services.LABELS})


@login_required
def prompt_detail(request: HttpRequest, agent_name: str) -> HttpResponse:
    """An agent's prompt versions, which label's release uses each, and "try in dev"."""
    agent = _prompt_agent(request, agent_name)
    rows = services.release_label_rows(agent_name=agent.name)
    by_label = {row.label: row.release for row in rows}
    versions = prompts.prompt_versions(agent_name=agent.name)
    return render(
        request,
        "prompts/detail.html",
        {
            "agent": agent,
            "label_rows": rows,
            "production": by_label[LabelName.PRODUCTION].prompt_version,
            "dev": by_label[LabelName.DEV].prompt_version,
            "versions": [(version, _labels_of(rows, version)) for version in versions],
            "code_version": prompts.prompt_code_version(agent=agent),
            "placeholders": sorted(agent.allowed_placeholders),
            "can_change": request.user.has_perm(prompts.CHANGE_PROMPTS),
            "can_try": request.user.has_perm(services.CHANGE_RELEASES),
        },
    )


@login_required
def prompt_version(request: HtmxHttpRequest, agent_name: str, number: int) -> HttpResponse:
    """One prompt version and its diff against production's (or ``?against=<number>``)."""
    agent = _prompt_agent(request, agent_name)
    version = _prompt_version_or_404(agent, number)
    rows = services.release_label_rows(agent_name=agent.name)
    by_label = {row.label: row.release for row in rows}
    production = by_label[LabelName.PRODUCTION].prompt_version
    against = production
    if (other := query_number(request.GET, "against")) is not None:
        against = _prompt_version_or_404(agent, other)
    context = {
        "agent": agent,
        "version": version,
        "labels": _labels_of(rows, version),
        "dev": by_label[LabelName.DEV].prompt_version,
        "production": production,
        "against": against,
        "diff": prompts.prompt_diff(a=against, b=version),
        "can_change": request.user.has_perm(prompts.CHANGE_PROMPTS),
        "can_try": request.user.has_perm(services.CHANGE_RELEASES),
    }
    template = "prompts/version.html#diff" if request.htmx else "prompts/version.html"
    return render(request, template, context)


@login_required
@require_POST
def prompt_try(request: HttpRequest, agent_name: str) -> HttpResponse:
    """Point dev at a prompt version (with dev's configuration): a new dev release."""
    agent = _prompt_agent(request, agent_name)
    if not request.user.has_perm(services.CHANGE_RELEASES):
        raise PermissionDenied
    form = TryPromptForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a prompt version to try in dev.")
        return redirect("prompts:detail", agent_name=agent.name)
    try:
        move = services.release_try_prompt(
            agent_name=agent.name,
            prompt_number=form.cleaned_data["number"],
            user=cast(User, request.user),
        )
    except services.ReleaseRefused as exc:
        messages.error(request, str(exc))
        return redirect("prompts:detail", agent_name=agent.name)
    messages.success(
        request,
        f"dev now runs release {move.to_release.number}: prompt "
        f"v{move.to_release.prompt_version.number} with configuration "
        f"v{move.to_release.config_version.number}.",
    )
    return redirect("releases:detail", agent_name=agent.name)


@login_required
def prompt_version_new(request: HttpRequest, agent_name: str) -> HttpResponse:
    """A new prompt version, starting from dev's (``?from=<number>`` or ``?from=code``)."""
    agent = _prompt_agent(request, agent_name)
    if not request.user.has_perm(prompts.CHANGE_PROMPTS):
        raise PermissionDenied
    start = services.release_labels(agent_name=agent.name)[LabelName.DEV].prompt_version
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


# --- releases ----------------------------------------------------------------------------------
#
# Holders of releases.view_release (operators, release managers, auditors) see every
# agent's releases and labels; releases.change_release (operators) makes releases and
# moves dev and staging; releases.promote_production_release (release managers,
# superusers) moves production. Without view: 403 on the list, 404 on an agent's pages.
# With view but without what a write needs: 403, and nothing changes.


@dataclass(frozen=True)
class LabelCard:
    """One label on the release page, and the moves this user may make from there."""

    row: ReleaseLabel
    source: str  # the label a promotion comes from; "" for dev
    promote_to: Release | None  # the source's release, when it differs
    promote_diff: services.ReleaseDiff | None  # what the promotion changes
    rollback_to: list[Release]
    may_move: bool
    # What the promotion gate says of ``promote_to`` now (production only), and whether
    # this user may override a refusal.
    gate: GateResult | None = None
    may_override: bool = False


def _cards(request: HttpRequest, agent: Agent) -> list[LabelCard]:
    rows = services.release_label_rows(agent_name=agent.name)
    by_label = {row.label: row.release for row in rows}
    cards = []
    for row in rows:
        source = services.PROMOTED_FROM.get(LabelName(row.label))
        promote_to = by_label[source] if source else None
        if promote_to is not None and promote_to.pk == row.release_id:
            promote_to = None
        previous = (
            services.release_label_previous(agent_name=agent.name, label=row.label)
            if source
            else []
        )
        cards.append(
            LabelCard(
                row=row,
                source=source or "",
                promote_to=promote_to,
                promote_diff=(
                    services.release_diff(a=row.release, b=promote_to) if promote_to else None
                ),
                # The release a promotion offers is not offered again as a rollback:
                # moving there is a promotion (through the gate) either way.
                rollback_to=[r for r in previous if r != promote_to],
                may_move=request.user.has_perm(services.release_move_permission(label=row.label)),
                gate=(
                    promotion_gate(release=promote_to, label=row.label, kind=MoveKind.PROMOTION)
                    if promote_to is not None and row.label == LabelName.PRODUCTION
                    else None
                ),
                may_override=request.user.has_perm(services.OVERRIDE_GATE),
            )
        )
    return cards


@login_required
def release_list(request: HttpRequest) -> HttpResponse:
    """Every registered agent and the release each label points at."""
    if not request.user.has_perm(services.VIEW_RELEASES):
        raise PermissionDenied
    rows = [
        (agent, services.release_label_rows(agent_name=agent.name))
        for agent in sorted(agents().values(), key=lambda a: a.name)
    ]
    return render(request, "releases/list.html", {"rows": rows, "labels": services.LABELS})


@login_required
def release_detail(request: HttpRequest, agent_name: str) -> HttpResponse:
    """An agent's labels (promote, roll back), its releases and the label history."""
    agent = _release_agent(request, agent_name)
    cards = _cards(request, agent)
    releases = services.releases_of(agent_name=agent.name)
    labels_of = {
        release.pk: [card.row.label for card in cards if card.row.release_id == release.pk]
        for release in releases
    }
    dev = next(card.row.release for card in cards if card.row.label == LabelName.DEV)
    return render(
        request,
        "releases/detail.html",
        {
            "agent": agent,
            "cards": cards,
            "releases": [(release, labels_of[release.pk]) for release in releases],
            "history": services.release_label_history(agent_name=agent.name),
            "form": ReleaseForm(
                initial={
                    "prompt_number": dev.prompt_version.number,
                    "config_number": dev.config_version.number,
                }
            ),
            "can_change": request.user.has_perm(services.CHANGE_RELEASES),
        },
    )


@login_required
def release_view(request: HtmxHttpRequest, agent_name: str, number: int) -> HttpResponse:
    """One release and what it changes against production's (or ``?against=<number>``)."""
    agent = _release_agent(request, agent_name)
    release = _release_or_404(agent, number)
    rows = services.release_label_rows(agent_name=agent.name)
    production = next(row.release for row in rows if row.label == LabelName.PRODUCTION)
    against = production
    if (other := query_number(request.GET, "against")) is not None:
        against = _release_or_404(agent, other)
    context = {
        "agent": agent,
        "release": release,
        "labels": [row.label for row in rows if row.release_id == release.pk],
        "production": production,
        "against": against,
        "diff": services.release_diff(a=against, b=release),
    }
    template = "releases/release.html#diff" if request.htmx else "releases/release.html"
    return render(request, template, context)


@login_required
@require_POST
def release_new(request: HttpRequest, agent_name: str) -> HttpResponse:
    """Make (or find) the release of a prompt version and a configuration version."""
    agent = _release_agent(request, agent_name)
    if not request.user.has_perm(services.CHANGE_RELEASES):
        raise PermissionDenied
    form = ReleaseForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give the numbers of an existing prompt and configuration version.")
        return redirect("releases:detail", agent_name=agent.name)
    try:
        release = services.release_make(
            agent_name=agent.name,
            prompt_number=form.cleaned_data["prompt_number"],
            config_number=form.cleaned_data["config_number"],
            note=form.cleaned_data["note"],
            user=cast(User, request.user),
        )
    except services.ReleaseRefused as exc:
        messages.error(request, str(exc))
        return redirect("releases:detail", agent_name=agent.name)
    messages.success(
        request,
        f"Release {release.number} pins prompt v{release.prompt_version.number} and "
        f"configuration v{release.config_version.number}. Point dev at it to try it.",
    )
    return redirect("releases:release", agent_name=agent.name, number=release.number)


_MOVED = {
    MoveKind.PROMOTION: "Promoted release {n} to {label}.",
    MoveKind.ROLLBACK: "Rolled {label} back to release {n}.",
    MoveKind.MOVE: "{label} now points at release {n}.",
}


@login_required
@require_POST
def release_move(request: HttpRequest, agent_name: str) -> HttpResponse:
    """Move a label: promote, roll back, or point dev at a release."""
    agent = _release_agent(request, agent_name)
    user = request.user
    if not (user.has_perm(services.CHANGE_RELEASES) or user.has_perm(services.PROMOTE_PRODUCTION)):
        raise PermissionDenied
    form = LabelMoveForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a label and a release number to move it to.")
        return redirect("releases:detail", agent_name=agent.name)
    label = form.cleaned_data["label"]
    if label in LabelName.values and not user.has_perm(
        services.release_move_permission(label=label)
    ):
        raise PermissionDenied
    try:
        move = services.release_label_move(
            agent_name=agent.name,
            label=label,
            number=form.cleaned_data["number"],
            user=cast(User, user),
            expected_current=form.cleaned_data["expected_current"],
            override_reason=form.cleaned_data["override_reason"],
        )
    except services.LabelChanged as exc:
        messages.warning(request, str(exc))
        return redirect("releases:detail", agent_name=agent.name)
    except services.ReleaseRefused as exc:
        messages.error(request, str(exc))
        return redirect("releases:detail", agent_name=agent.name)
    text = _MOVED[MoveKind(move.kind)].format(n=move.to_release.number, label=move.label)
    if move.label == LabelName.PRODUCTION:
        text += " New runs use it; runs in flight keep the release they started with."
    if move.gate:
        text += f" Gate: {move.gate}."
    messages.success(request, text)
    return redirect("releases:detail", agent_name=agent.name)
