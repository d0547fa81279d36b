"""The regression gate: does an eval clear its floors, and has it not regressed?

Used by ``manage.py eval gate`` (CI) and by the promotion gate (releases.gate, through
``promotion_evidence``, which the app registers). A metric *fails* when its mean is below
its floor, or when it fell by more than the allowance (in points, default 2: the seeds'
rule) against the baseline eval on the same dataset version. An eval with errors in it
fails when more than ``max_errors`` examples could not be run (default 0): an example
that errored scores 0, but a gate should say so in words.

Floors and the allowance come from the gating dataset's ``gate`` (evals.models.Dataset)
and may be overridden per call (the CLI's ``--floor`` and ``--allowance``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from evals.comparison import MetricDelta, evals_compare
from evals.models import Dataset, Eval, EvalState
from evals.scoring import QUALITY_METRICS
from releases.gate import GateResult
from releases.models import LabelName, Release, ReleaseLabel

DEFAULT_ALLOWANCE_POINTS = 2.0


@dataclass(frozen=True)
class GateRules:
    floors: Mapping[str, float] = field(default_factory=dict)
    allowance_points: float = DEFAULT_ALLOWANCE_POINTS
    max_errors: int = 0

    @classmethod
    def of(cls, dataset: Dataset, **overrides: Any) -> GateRules:
        stored = dataset.gate or {}
        floors = {**(stored.get("floors") or {}), **(overrides.get("floors") or {})}
        unknown = sorted(set(floors) - set(QUALITY_METRICS))
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)} in the floors")
        allowance = overrides.get("allowance_points")
        return cls(
            floors={name: float(value) for name, value in floors.items()},
            allowance_points=float(
                allowance
                if allowance is not None
                else stored.get("allowance_points", DEFAULT_ALLOWANCE_POINTS)
            ),
            max_errors=int(stored.get("max_errors", 0)),
        )


@dataclass(frozen=True)
class GateRow:
    metric: str
    value: float
    floor: float | None
    baseline: float | None
    delta_points: float | None
    status: str  # "ok", "below floor", "regressed"

    def as_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": self.value,
            "floor": self.floor,
            "baseline": self.baseline,
            "delta_points": self.delta_points,
            "status": self.status,
        }


@dataclass(frozen=True)
class GateReport:
    eval: Eval
    baseline: Eval | None
    rules: GateRules
    rows: list[GateRow]
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        against = (
            f" against eval {self.baseline.pk}"
            if self.baseline
            else " (floors only: no baseline eval on this dataset version)"
        )
        if self.passed:
            return f"eval {self.eval.pk} passed{against}"
        return f"eval {self.eval.pk} failed{against}: " + "; ".join(self.problems)

    def as_json(self) -> dict[str, Any]:
        return {
            "eval": self.eval.pk,
            "baseline": self.baseline.pk if self.baseline else None,
            "passed": self.passed,
            "problems": self.problems,
            "allowance_points": self.rules.allowance_points,
            "rows": [row.as_json() for row in self.rows],
        }


def gate_report(evaluation: Eval, *, baseline: Eval | None, rules: GateRules) -> GateReport:
    """The gate's verdict on a finished eval, metric by metric."""
    problems: list[str] = []
    if evaluation.state != EvalState.FINISHED:
        problems.append(
            f"eval {evaluation.pk} has not finished ({evaluation.done} of {evaluation.total})"
        )
    metrics = (evaluation.metrics or {}).get("metrics", {})
    errors = (evaluation.metrics or {}).get("errors", 0)
    if errors > rules.max_errors:
        problems.append(f"{errors} example(s) could not be run (allowed: {rules.max_errors})")
    deltas: dict[str, MetricDelta] = {}
    if baseline is not None:
        deltas = {
            d.metric: d for d in evals_compare(baseline=baseline, candidate=evaluation).deltas
        }
        if baseline.judge_id != evaluation.judge_id:
            # Graded by two judges, the judge's scores compare the judges: only its floor holds.
            deltas.pop("judge", None)
    rows = []
    for metric in QUALITY_METRICS:
        if metric not in metrics:
            if metric in rules.floors:
                problems.append(f"{metric} has a floor but no example measures it")
            continue
        value = metrics[metric]["mean"]
        floor = rules.floors.get(metric)
        delta = deltas.get(metric)
        status = "ok"
        if floor is not None and value < floor:
            status = "below floor"
            problems.append(f"{metric} {value:.3f} is below its floor {floor:.3f}")
        elif delta is not None and delta.delta_points < -rules.allowance_points:
            status = "regressed"
            problems.append(
                f"{metric} fell {-delta.delta_points:.1f} points against the baseline "
                f"(allowed: {rules.allowance_points:g})"
            )
        rows.append(
            GateRow(
                metric=metric,
                value=value,
                floor=floor,
                baseline=delta.baseline if delta else None,
                delta_points=delta.delta_points if delta else None,
                status=status,
            )
        )
    return GateReport(evaluation, baseline, rules, rows, problems)


def eval_latest(*, release: Release, dataset: Dataset) -> Eval | None:
    """The latest finished eval of ``release`` on the dataset's latest version."""
    latest = dataset.versions.order_by("-number").first()
    if latest is None:
        return None
    return (
        Eval.objects.filter(release=release, dataset_version=latest, state=EvalState.FINISHED)
        .order_by("-finished_at")
        .first()
    )


def gating_dataset(*, agent_name: str) -> Dataset | None:
    return Dataset.objects.filter(agent_name=agent_name, gating=True).first()


def promotion_evidence(release: Release) -> GateResult:
    """The production gate's check (registered with releases.gate by the app)."""
    agent = release.agent_name
    dataset = gating_dataset(agent_name=agent)
    if dataset is None:
        return GateResult(
            passed=True,
            reason=f"passed: {agent} has no gating dataset (mark one as gating to gate "
            "promotions on an eval)",
        )
    run_it = (
        f"run one: python manage.py eval run --agent {agent} --release {release.number} "
        f"--dataset {dataset.name}"
    )
    link = reverse("evals:evals", args=[agent])
    evaluation = eval_latest(release=release, dataset=dataset)
    if evaluation is None:
        return GateResult(
            passed=False,
            reason=f"release {release.number} has no finished eval on the gating dataset "
            f"{dataset.name} (its latest version); {run_it}",
            link=link,
        )
    max_age = timedelta(days=settings.AGENTDESK_GATE_MAX_AGE_DAYS)
    assert evaluation.finished_at is not None
    if timezone.now() - evaluation.finished_at > max_age:
        return GateResult(
            passed=False,
            reason=f"the latest eval of release {release.number} on {dataset.name} (eval "
            f"{evaluation.pk}) is older than {settings.AGENTDESK_GATE_MAX_AGE_DAYS:g} days; "
            f"{run_it}",
            link=link,
        )
    production = (
        ReleaseLabel.objects.filter(agent_name=agent, label=LabelName.PRODUCTION)
        .select_related("release")
        .first()
    )
    baseline = None
    if production is not None and production.release_id != release.pk:
        baseline = eval_latest(release=production.release, dataset=dataset)
    report = gate_report(evaluation, baseline=baseline, rules=GateRules.of(dataset))
    if not report.passed:
        return GateResult(
            passed=False, reason=report.summary() + f"; {run_it} after a fix", link=link
        )
    return GateResult(passed=True, reason=f"passed: {report.summary()} on {dataset.name}")
