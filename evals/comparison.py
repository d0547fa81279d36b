"""Two evals on the same dataset version, side by side.

Examples are paired by their id (the same example in both), so each metric's delta is
the mean of per-example differences, with a 95 % paired bootstrap confidence interval
(``scipy.stats.bootstrap``, ``paired=True``, seeded so a page shows the same interval
every time); for a metric that is 0 or 1 per example (tool selection, task completion),
an exact McNemar test on the discordant pairs (``scipy.stats.binomtest``) says how
likely a difference this large is by chance. An example *regressed* when one of its
scores fell, *improved* when one rose and none fell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from evals.models import Eval, EvalResult
from evals.scoring import QUALITY_METRICS

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2_000
_SEED = 20261203


class NotComparable(ValueError):
    """The two evals did not run on the same dataset version."""


@dataclass(frozen=True)
class MetricDelta:
    metric: str
    baseline: float
    candidate: float
    delta: float  # candidate - baseline, over the paired examples
    low: float | None  # the interval of the delta; None with fewer than 2 pairs
    high: float | None
    pairs: int
    p_value: float | None = None  # the exact test, for 0/1 metrics

    @property
    def delta_points(self) -> float:
        return round(self.delta * 100, 2)

    @property
    def interval_points(self) -> tuple[float, float] | None:
        if self.low is None or self.high is None:
            return None
        return round(self.low * 100, 1), round(self.high * 100, 1)


@dataclass(frozen=True)
class ExampleChange:
    example_id: str
    index: int
    changed: dict[str, tuple[float | None, float | None]]  # metric: (baseline, candidate)


@dataclass
class Comparison:
    baseline: Eval
    candidate: Eval
    deltas: list[MetricDelta] = field(default_factory=list)
    regressed: list[ExampleChange] = field(default_factory=list)
    improved: list[ExampleChange] = field(default_factory=list)

    def delta(self, metric: str) -> MetricDelta | None:
        return next((d for d in self.deltas if d.metric == metric), None)


def _interval(differences: np.ndarray) -> tuple[float | None, float | None]:
    if len(differences) < 2 or np.all(differences == differences[0]):
        # No spread: the interval is the point (bootstrap would warn of a degenerate sample).
        value = float(differences[0]) if len(differences) else None
        return (value, value) if len(differences) >= 2 else (None, None)
    result = stats.bootstrap(
        (differences,),
        np.mean,
        confidence_level=CONFIDENCE,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(_SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _exact_p(pairs: Sequence[tuple[float, float]]) -> float | None:
    """McNemar's exact test on 0/1 pairs; None when the metric is not 0/1."""
    if not all(a in (0.0, 1.0) and b in (0.0, 1.0) for a, b in pairs):
        return None
    up = sum(1 for a, b in pairs if a == 0.0 and b == 1.0)
    down = sum(1 for a, b in pairs if a == 1.0 and b == 0.0)
    if up + down == 0:
        return 1.0
    return float(stats.binomtest(up, up + down, 0.5).pvalue)


def metric_deltas(
    baseline: Mapping[str, Mapping[str, Any]], candidate: Mapping[str, Mapping[str, Any]]
) -> list[MetricDelta]:
    """Per metric, over the examples both scored: the means, the delta and its interval.

    ``baseline`` and ``candidate``: scores by example id.
    """
    deltas = []
    for metric in QUALITY_METRICS:
        pairs = [
            (float(baseline[key][metric]), float(candidate[key][metric]))
            for key in baseline.keys() & candidate.keys()
            if baseline[key].get(metric) is not None and candidate[key].get(metric) is not None
        ]
        if not pairs:
            continue
        before = np.array([a for a, _ in pairs])
        after = np.array([b for _, b in pairs])
        low, high = _interval(after - before)
        deltas.append(
            MetricDelta(
                metric=metric,
                baseline=round(float(before.mean()), 4),
                candidate=round(float(after.mean()), 4),
                delta=round(float((after - before).mean()), 4),
                low=round(low, 4) if low is not None else None,
                high=round(high, 4) if high is not None else None,
                pairs=len(pairs),
                p_value=_exact_p(pairs),
            )
        )
    return deltas


def _scores_by_example(evaluation: Eval) -> dict[str, tuple[int, dict[str, Any]]]:
    return {
        result.example_id: (result.index, result.scores)
        for result in EvalResult.objects.filter(eval=evaluation).only(
            "example_id", "index", "scores"
        )
    }


def evals_compare(*, baseline: Eval, candidate: Eval) -> Comparison:
    """The comparison of two finished evals; NotComparable across dataset versions."""
    if baseline.dataset_version_id != candidate.dataset_version_id:
        raise NotComparable(
            "The two evals ran on different dataset versions; compare evals of one version."
        )
    before = _scores_by_example(baseline)
    after = _scores_by_example(candidate)
    comparison = Comparison(
        baseline=baseline,
        candidate=candidate,
        deltas=metric_deltas(
            {k: v[1] for k, v in before.items()}, {k: v[1] for k, v in after.items()}
        ),
    )
    for key in sorted(before.keys() & after.keys(), key=lambda k: after[k][0]):
        changed = {
            metric: (before[key][1].get(metric), after[key][1].get(metric))
            for metric in QUALITY_METRICS
            if before[key][1].get(metric) != after[key][1].get(metric)
        }
        if not changed:
            continue
        change = ExampleChange(key, after[key][0], changed)
        fell = any(
            b is not None and (a is None or b < a) for a, b in changed.values() if a is not None
        )
        if fell:
            comparison.regressed.append(change)
        else:
            comparison.improved.append(change)
    return comparison
