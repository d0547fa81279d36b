"""The curation pages: an agent's queue of reviewers' corrections and its golden datasets.

Holders of ``evals.view_dataset`` (operators, auditors) see every agent's datasets and
pending corrections; ``evals.change_dataset`` (operators) makes every change: a dataset,
an accepted or discarded correction, an example added, removed or imported. Without view,
every page is 403; with view but without change, every form and POST is 403, and nothing
changes. An unknown agent, dataset, version, candidate or run is 404.

Each view checks the permission, validates a form, calls one service (which locks,
versions and audits) and redirects with a message, or renders the form again with every
error. A refusal (a correction someone curated first, a change that changes nothing) is a
warning on the page it came from, and nothing changes.
"""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from agentdesk.http import HtmxHttpRequest, agent_for
from agents.definition import Agent
from agents.registry import agents
from evals import curation, datasets, presenters, runner
from evals.comparison import NotComparable, evals_compare
from evals.examples import ExamplesRefused
from evals.forms import (
    AcceptForm,
    DatasetForm,
    DiscardForm,
    EvalStartForm,
    ExampleForm,
    GateForm,
    ImportForm,
    JudgeForm,
    RemoveForm,
)
from evals.judge import judge_current, judge_save
from evals.models import Dataset, DatasetVersion, Eval, JudgePrompt
from evals.selectors import eval_get
from reviews.models import CandidateStatus, GoldenCandidate
from reviews.selectors import candidates_list
from runs.models import Run
from runs.selectors import run_get_visible

VIEW = "evals.view_dataset"
CHANGE = "evals.change_dataset"
PAGE_SIZE = 25


# --- lookups: permission first (403), then the object (404) --------------------------------


def _agent(request: HttpRequest, agent_name: str, *, change: bool = False) -> Agent:
    return agent_for(request, agent_name, VIEW, *([CHANGE] if change else []))


def _dataset(agent: Agent, name: str) -> Dataset:
    found = Dataset.objects.filter(agent_name=agent.name, name=name).first()
    if found is None:
        raise Http404
    return found


def _version(dataset: Dataset, number: int) -> DatasetVersion:
    found = datasets.dataset_version_get(dataset=dataset, number=number)
    if found is None:
        raise Http404
    return found


def _candidate(request: HttpRequest, agent: Agent, candidate_id: int) -> GoldenCandidate:
    """A correction of the agent the user may read, whatever its status (else 404)."""
    found = (
        candidates_list(user=cast(User, request.user))
        .filter(agent_name=agent.name, pk=candidate_id)
        .first()
    )
    if found is None:
        raise Http404
    return found


def _dataset_names(agent: Agent) -> list[str]:
    found = Dataset.objects.filter(agent_name=agent.name).order_by("name")
    return list(found.values_list("name", flat=True))


def _user(request: HttpRequest) -> User:
    return cast(User, request.user)


def _refused(request: HttpRequest, exc: Exception) -> None:
    if isinstance(exc, ExamplesRefused):
        messages.error(request, "Nothing was saved: " + "; ".join(exc.errors))
    else:
        messages.warning(request, f"Nothing changed: {exc}")


# --- the agents ------------------------------------------------------------------------------


@login_required
def agent_list(request: HttpRequest) -> HttpResponse:
    """Every agent, its datasets and how many corrections wait to be curated."""
    if not request.user.has_perm(VIEW):
        raise PermissionDenied
    pending = candidates_list(user=_user(request)).filter(status=CandidateStatus.CANDIDATE)
    rows = [
        {
            "agent": agent,
            "datasets": Dataset.objects.filter(agent_name=agent.name).count(),
            "pending": pending.filter(agent_name=agent.name).count(),
        }
        for agent in sorted(agents().values(), key=lambda a: a.name)
    ]
    return render(request, "evals/list.html", {"rows": rows})


# --- the curation queue ----------------------------------------------------------------------


@login_required
def candidate_queue(request: HttpRequest, agent_name: str) -> HttpResponse:
    """The agent's pending corrections, newest first, each with accept, edit and discard."""
    agent = _agent(request, agent_name)
    pending = candidates_list(user=_user(request)).filter(
        agent_name=agent.name, status=CandidateStatus.CANDIDATE
    )
    page = Paginator(pending, PAGE_SIZE).get_page(request.GET.get("page"))
    names = _dataset_names(agent)
    context = {
        "agent": agent,
        "page": page,
        "cards": [presenters.candidate_card(c, agent) for c in page.object_list],
        "dataset_names": names,
        "can_change": request.user.has_perm(CHANGE),
    }
    return render(request, "evals/queue.html", context)


@login_required
@require_POST
def candidate_accept(request: HttpRequest, agent_name: str, candidate_id: int) -> HttpResponse:
    """Accept a correction as the example it gives (with tags) into a chosen dataset."""
    agent = _agent(request, agent_name, change=True)
    candidate = _candidate(request, agent, candidate_id)
    form = AcceptForm(request.POST, dataset_names=_dataset_names(agent))
    if not form.is_valid():
        messages.error(request, "Choose a dataset to accept the correction into.")
        return redirect("evals:queue", agent_name=agent.name)
    dataset = _dataset(agent, form.cleaned_data["dataset"])
    try:
        version = datasets.candidates_accept(
            dataset=dataset,
            candidate_ids=[candidate.pk],
            user=_user(request),
            note=form.cleaned_data["note"],
            examples={
                candidate.pk: curation.candidate_tagged(
                    candidate=candidate, tags=form.cleaned_data["tags"]
                )
            },
        )
    except (datasets.DatasetRefused, ExamplesRefused) as exc:
        _refused(request, exc)
        return redirect("evals:queue", agent_name=agent.name)
    messages.success(
        request,
        f"Accepted correction {candidate.pk} into {dataset.name}: version {version.number} "
        f"holds {len(version.examples)} examples.",
    )
    return redirect("evals:queue", agent_name=agent.name)


@login_required
def candidate_edit(request: HttpRequest, agent_name: str, candidate_id: int) -> HttpResponse:
    """Edit the expectation a correction gives (argument by argument), then accept it."""
    agent = _agent(request, agent_name, change=True)
    candidate = _candidate(request, agent, candidate_id)
    tool = presenters.candidate_tool(agent, candidate)
    if tool is None:
        messages.error(
            request,
            f"{agent.name} has no tool {candidate.proposal.get('tool')!r} any more: write "
            "this example by hand on a dataset's page.",
        )
        return redirect("evals:queue", agent_name=agent.name)
    names = _dataset_names(agent)
    form = presenters.expectation_form(
        candidate=candidate,
        tool=tool,
        dataset_names=names,
        data=request.POST if request.method == "POST" else None,
    )
    status, errors = 200, []
    if request.method == "POST":
        status = 400
        if form.is_valid():
            dataset = _dataset(agent, form.cleaned_data["dataset"])
            example = form.example(datasets.candidate_example(candidate=candidate))
            try:
                version = datasets.candidates_accept(
                    dataset=dataset,
                    candidate_ids=[candidate.pk],
                    user=_user(request),
                    note=form.cleaned_data["note"],
                    examples={candidate.pk: example},
                )
            except ExamplesRefused as exc:
                errors = exc.errors
            except datasets.DatasetRefused as exc:
                _refused(request, exc)
                return redirect("evals:queue", agent_name=agent.name)
            else:
                messages.success(
                    request,
                    f"Accepted correction {candidate.pk}, edited, into {dataset.name}: "
                    f"version {version.number}.",
                )
                return redirect("evals:queue", agent_name=agent.name)
    context = {
        "agent": agent,
        "card": presenters.candidate_card(candidate, agent),
        "form": form,
        "tool": tool,
        "errors": errors,
        "pending": candidate.status == CandidateStatus.CANDIDATE,
    }
    return render(request, "evals/edit.html", context, status=status)


@login_required
@require_POST
def candidate_discard(request: HttpRequest, agent_name: str, candidate_id: int) -> HttpResponse:
    """Discard a correction: it stays on record, out of the queue."""
    agent = _agent(request, agent_name, change=True)
    candidate = _candidate(request, agent, candidate_id)
    form = DiscardForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        datasets.candidate_discard(candidate_id=candidate.pk, user=_user(request), reason=reason)
    except datasets.DatasetRefused as exc:
        _refused(request, exc)
    else:
        messages.success(request, f"Discarded correction {candidate.pk}.")
    return redirect("evals:queue", agent_name=agent.name)


# --- datasets --------------------------------------------------------------------------------


@login_required
def dataset_list(request: HttpRequest, agent_name: str) -> HttpResponse:
    """The agent's datasets, and a form for a new one."""
    agent = _agent(request, agent_name)
    found = list(Dataset.objects.filter(agent_name=agent.name).order_by("name"))
    return _dataset_list_page(request, agent, found, DatasetForm(), status=200)


def _dataset_list_page(
    request: HttpRequest, agent: Agent, found: list[Dataset], form: DatasetForm, *, status: int
) -> HttpResponse:
    context = {
        "agent": agent,
        "rows": presenters.dataset_rows(found),
        "form": form,
        "can_change": request.user.has_perm(CHANGE),
    }
    return render(request, "evals/datasets.html", context, status=status)


@login_required
@require_POST
def dataset_new(request: HttpRequest, agent_name: str) -> HttpResponse:
    """A new, empty dataset (version 1)."""
    agent = _agent(request, agent_name, change=True)
    form = DatasetForm(request.POST)
    if form.is_valid():
        try:
            version = datasets.dataset_create(
                agent_name=agent.name,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
                user=_user(request),
            )
        except datasets.DatasetRefused as exc:
            form.add_error("name", str(exc))
        else:
            messages.success(
                request,
                f"Created {version.dataset.name}. Add examples: accept corrections, write "
                "one, or import a JSONL file.",
            )
            return redirect("evals:dataset", agent_name=agent.name, name=version.dataset.name)
    found = list(Dataset.objects.filter(agent_name=agent.name).order_by("name"))
    return _dataset_list_page(request, agent, found, form, status=400)


def _dataset_page(
    request: HttpRequest,
    agent: Agent,
    dataset: Dataset,
    version: DatasetVersion | None,
    *,
    remove_form: RemoveForm | None = None,
    gate_form: GateForm | None = None,
    status: int = 200,
) -> HttpResponse:
    latest = datasets.dataset_latest(dataset=dataset)
    shown = version or latest
    context = {
        "agent": agent,
        "dataset": dataset,
        "latest": latest,
        "version": shown,
        "is_latest": shown is not None and latest is not None and shown.pk == latest.pk,
        "versions": [(v, len(v.examples)) for v in dataset.versions.order_by("-number")],
        "examples": presenters.example_rows(list(shown.examples) if shown else [], agent),
        "remove_form": remove_form,
        "can_change": request.user.has_perm(CHANGE),
        "gate_form": gate_form
        or GateForm(
            initial={
                "gating": dataset.gating,
                "floors": (dataset.gate or {}).get("floors") or None,
                "allowance_points": (dataset.gate or {}).get("allowance_points"),
            }
        ),
    }
    return render(request, "evals/dataset.html", context, status=status)


@login_required
@require_POST
def dataset_gate(request: HttpRequest, agent_name: str, name: str) -> HttpResponse:
    """Make the dataset gate promotions to production, or change its rules."""
    agent = _agent(request, agent_name, change=True)
    dataset = _dataset(agent, name)
    form = GateForm(request.POST)
    if not form.is_valid():
        return _dataset_page(request, agent, dataset, None, gate_form=form, status=400)
    rules = {
        "floors": form.cleaned_data["floors"],
        "allowance_points": form.cleaned_data["allowance_points"],
    }
    try:
        datasets.dataset_gate_set(
            dataset=dataset, gating=form.cleaned_data["gating"], rules=rules, user=_user(request)
        )
    except datasets.DatasetRefused as exc:
        _refused(request, exc)
    else:
        state = "gates" if form.cleaned_data["gating"] else "no longer gates"
        messages.success(request, f"{dataset.name} {state} promotions to production.")
    return redirect("evals:dataset", agent.name, dataset.name)


@login_required
def dataset_detail(request: HttpRequest, agent_name: str, name: str) -> HttpResponse:
    """A dataset: its versions and the latest version's examples (tick some to remove)."""
    agent = _agent(request, agent_name)
    return _dataset_page(request, agent, _dataset(agent, name), None)


@login_required
def dataset_version(request: HttpRequest, agent_name: str, name: str, number: int) -> HttpResponse:
    """One version of a dataset and its examples, as they were."""
    agent = _agent(request, agent_name)
    dataset = _dataset(agent, name)
    return _dataset_page(request, agent, dataset, _version(dataset, number))


@login_required
@require_POST
def dataset_remove(request: HttpRequest, agent_name: str, name: str) -> HttpResponse:
    """The latest version without the ticked examples, as the next version."""
    agent = _agent(request, agent_name, change=True)
    dataset = _dataset(agent, name)
    latest = datasets.dataset_latest(dataset=dataset)
    ids = [str(e["id"]) for e in (latest.examples if latest else [])]
    form = RemoveForm(request.POST, example_ids=ids)
    if not form.is_valid():
        return _dataset_page(request, agent, dataset, None, remove_form=form, status=400)
    try:
        version = datasets.dataset_examples_remove(
            dataset=dataset,
            example_ids=form.cleaned_data["ids"],
            note=form.cleaned_data["note"] or f"Removed {len(form.cleaned_data['ids'])}.",
            user=_user(request),
        )
    except (datasets.DatasetRefused, ExamplesRefused) as exc:
        _refused(request, exc)
        return redirect("evals:dataset", agent_name=agent.name, name=dataset.name)
    messages.success(
        request,
        f"Removed {len(form.cleaned_data['ids'])} example(s): version {version.number} holds "
        f"{len(version.examples)}.",
    )
    return redirect("evals:dataset", agent_name=agent.name, name=dataset.name)


def _example_page(
    request: HttpRequest,
    agent: Agent,
    dataset: Dataset,
    *,
    run: Run | None = None,
    initial: dict[str, Any],
) -> HttpResponse:
    """The hand-written example form (also a run's task example): saved only if right."""
    errors: list[str] = []
    if request.method == "POST":
        form = ExampleForm(request.POST)
        if form.is_valid():
            try:
                example = curation.example_parse(text=form.cleaned_data["example"])
                version = curation.example_add(
                    dataset=dataset,
                    example=example,
                    note=form.cleaned_data["note"]
                    or (f"From run {run.pk}." if run else "Written by hand."),
                    user=_user(request),
                )
            except ExamplesRefused as exc:
                errors = exc.errors
            except datasets.DatasetRefused as exc:
                errors = [str(exc)]
            else:
                messages.success(
                    request,
                    f"Added the example: version {version.number} holds {len(version.examples)}.",
                )
                return redirect("evals:dataset", agent_name=agent.name, name=dataset.name)
        status = 400
    else:
        form = ExampleForm(initial={"example": presenters.example_json(initial)})
        status = 200
    context = {"agent": agent, "dataset": dataset, "form": form, "errors": errors, "run": run}
    return render(request, "evals/example.html", context, status=status)


@login_required
def example_new(request: HttpRequest, agent_name: str, name: str) -> HttpResponse:
    """Write one example as JSON; every error is listed with its place, nothing saved."""
    agent = _agent(request, agent_name, change=True)
    dataset = _dataset(agent, name)
    return _example_page(request, agent, dataset, initial=presenters.example_template(agent))


@login_required
def example_from_run(
    request: HttpRequest, agent_name: str, name: str, run_id: UUID
) -> HttpResponse:
    """A finished run as a task example, prefilled; edit it (the rubric), then save."""
    agent = _agent(request, agent_name, change=True)
    dataset = _dataset(agent, name)
    seen = run_get_visible(user=_user(request), run_id=str(run_id))
    if seen is None or seen.run.agent_name != agent.name or not seen.full:
        raise Http404
    try:
        initial = curation.run_task_example(run=seen.run)
    except curation.RunNotFinished as exc:
        messages.warning(request, str(exc))
        return redirect("evals:dataset", agent_name=agent.name, name=dataset.name)
    return _example_page(request, agent, dataset, run=seen.run, initial=initial)


@login_required
def run_datasets(request: HttpRequest, agent_name: str, run_id: UUID) -> HttpResponse:
    """Which dataset a finished run goes to, as a task example (the run page links here)."""
    agent = _agent(request, agent_name, change=True)
    seen = run_get_visible(user=_user(request), run_id=str(run_id))
    if seen is None or seen.run.agent_name != agent.name or not seen.full:
        raise Http404
    found = list(Dataset.objects.filter(agent_name=agent.name).order_by("name"))
    context = {"agent": agent, "run": seen.run, "rows": presenters.dataset_rows(found)}
    return render(request, "evals/run_datasets.html", context)


@login_required
def dataset_import(request: HttpRequest, agent_name: str, name: str) -> HttpResponse:
    """Upload JSONL: one example per line; any bad line names itself and nothing is saved."""
    agent = _agent(request, agent_name, change=True)
    dataset = _dataset(agent, name)
    errors: list[str] = []
    status = 200
    if request.method == "POST":
        form = ImportForm(request.POST, request.FILES)
        status = 400
        if form.is_valid():
            replace = form.cleaned_data["replace"]
            try:
                version = curation.jsonl_import(
                    dataset=dataset,
                    text=form.cleaned_data["file"],
                    note=form.cleaned_data["note"]
                    or ("Imported, replacing." if replace else "Imported."),
                    user=_user(request),
                    replace=replace,
                )
            except ExamplesRefused as exc:
                errors = exc.errors
            except datasets.DatasetRefused as exc:
                errors = [str(exc)]
            else:
                messages.success(
                    request,
                    f"Imported: version {version.number} holds {len(version.examples)} examples.",
                )
                return redirect("evals:dataset", agent_name=agent.name, name=dataset.name)
    else:
        form = ImportForm()
    context = {"agent": agent, "dataset": dataset, "form": form, "errors": errors}
    return render(request, "evals/import.html", context, status=status)


@login_required
def dataset_export(request: HttpRequest, agent_name: str, name: str, number: int) -> HttpResponse:
    """A version as a JSONL download, the form an import reads back."""
    agent = _agent(request, agent_name)
    dataset = _dataset(agent, name)
    version = _version(dataset, number)
    response = HttpResponse(
        datasets.dataset_export_jsonl(version=version), content_type="application/x-ndjson"
    )
    filename = f"{agent.name}-{dataset.name}-v{version.number}.jsonl"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# --- evals -----------------------------------------------------------------------------------
#
# ``evals.view_eval`` opens the eval pages (operators, auditors); ``evals.run_eval`` starts
# one (operators). Comparisons pair two evals of one dataset version.

VIEW_EVAL = "evals.view_eval"
RUN_EVAL = "evals.run_eval"


def _eval_agent(request: HttpRequest, agent_name: str, *, run: bool = False) -> Agent:
    return agent_for(request, agent_name, VIEW_EVAL, *([RUN_EVAL] if run else []))


def _eval(agent: Agent, eval_id: int) -> Eval:
    found = eval_get(eval_id=eval_id)
    if found is None or found.agent_name != agent.name:
        raise Http404
    return found


@login_required
def eval_list(request: HttpRequest, agent_name: str) -> HttpResponse:
    """The agent's evals, newest first, a chart of their scores, and a form to run one."""
    agent = _eval_agent(request, agent_name)
    gating = Dataset.objects.filter(agent_name=agent.name, gating=True).first()
    form = EvalStartForm(
        agent=agent, initial={"release": "staging", "dataset": gating.name if gating else ""}
    )
    return render(request, "evals/evals.html", presenters.eval_list_context(agent, form=form))


@login_required
@require_POST
def eval_new(request: HttpRequest, agent_name: str) -> HttpResponse:
    agent = _eval_agent(request, agent_name, run=True)
    form = EvalStartForm(request.POST, agent=agent)
    if not form.is_valid():
        context = presenters.eval_list_context(agent, form=form)
        return render(request, "evals/evals.html", context, status=400)
    try:
        evaluation = runner.eval_start(
            release=form.cleaned_data["release"],
            dataset_version=form.cleaned_data["dataset_version"],
            user=_user(request),
        )
    except runner.EvalRefused as exc:
        _refused(request, exc)
        return redirect("evals:evals", agent.name)
    messages.success(
        request, f"Eval {evaluation.pk} started: {evaluation.total} examples on the workers."
    )
    return redirect("evals:eval", agent.name, evaluation.pk)


@login_required
def eval_detail(request: HtmxHttpRequest, agent_name: str, eval_id: int) -> HttpResponse:
    """One eval: its progress (polled while it runs), its metrics and every example."""
    agent = _eval_agent(request, agent_name)
    evaluation = _eval(agent, eval_id)
    context = presenters.eval_detail_context(evaluation)
    if request.htmx and request.GET.get("part") == "progress":
        return render(request, "evals/eval.html#progress", context)
    return render(request, "evals/eval.html", context)


@login_required
def eval_compare(
    request: HttpRequest, agent_name: str, eval_id: int, baseline_id: int
) -> HttpResponse:
    """Two evals of one dataset version: the deltas, and what regressed and improved."""
    agent = _eval_agent(request, agent_name)
    candidate, baseline = _eval(agent, eval_id), _eval(agent, baseline_id)
    try:
        comparison = evals_compare(baseline=baseline, candidate=candidate)
    except NotComparable as exc:
        messages.warning(request, str(exc))
        return redirect("evals:eval", agent.name, candidate.pk)
    return render(request, "evals/compare.html", {"agent": agent, "comparison": comparison})


@login_required
def eval_example_diff(
    request: HttpRequest, agent_name: str, eval_id: int, baseline_id: int, index: int
) -> HttpResponse:
    """One example: what was expected, what the baseline did, what the candidate did."""
    agent = _eval_agent(request, agent_name)
    candidate, baseline = _eval(agent, eval_id), _eval(agent, baseline_id)
    if candidate.dataset_version_id != baseline.dataset_version_id:
        raise Http404
    context = presenters.example_diff_context(candidate, baseline, index)
    if context is None:
        raise Http404
    return render(request, "evals/example_diff.html", {"agent": agent, **context})


# --- the judge ---------------------------------------------------------------------------------
#
# A new judge version changes how every later eval's answers are graded, so it is the
# release managers' (``evals.add_judgeprompt``), not every operator's.

ADD_JUDGE = "evals.add_judgeprompt"


@login_required
def judge_versions(request: HttpRequest, agent_name: str) -> HttpResponse:
    """The agent's judge versions, newest first, and a form for the next one."""
    agent = _eval_agent(request, agent_name)
    current = judge_current(agent_name=agent.name)
    form = JudgeForm(initial={"template": current.template, "model": current.model})
    return _judge_page(request, agent, form)


def _judge_page(
    request: HttpRequest, agent: Agent, form: JudgeForm, status: int = 200
) -> HttpResponse:
    versions = list(JudgePrompt.objects.filter(agent_name=agent.name).order_by("-number"))
    context = {
        "agent": agent,
        "versions": versions,
        "form": form,
        "can_add": request.user.has_perm(ADD_JUDGE),
    }
    return render(request, "evals/judge.html", context, status=status)


@login_required
@require_POST
def judge_new(request: HttpRequest, agent_name: str) -> HttpResponse:
    agent = agent_for(request, agent_name, VIEW_EVAL, ADD_JUDGE)
    form = JudgeForm(request.POST)
    if not form.is_valid():
        return _judge_page(request, agent, form, status=400)
    try:
        version = judge_save(agent_name=agent.name, user=_user(request), **form.cleaned_data)
    except ValueError as exc:
        form.add_error(None, str(exc))
        return _judge_page(request, agent, form, status=400)
    messages.success(request, f"Judge v{version.number} grades the evals started from now on.")
    return redirect("evals:judge", agent.name)
