"""Calibration statistics: pure functions of labelled calls (stated confidence, agreed?).

A *labelled* call is one a person reviewed: agreed when they approved it unchanged,
disagreed when they edited or rejected it (calibration.data). For a threshold ``t`` the
policy would let every call with confidence >= ``t`` run unreviewed; among the labelled
calls above ``t``, the disagreement rate is the risk of that automation.

- ``reliability``: stated confidence against observed agreement, per bin, with counts;
- ``expected_calibration_error``: the count-weighted mean gap between the two;
- ``disagreement_bound``: the exact (Clopper-Pearson) one-sided upper bound on the
  disagreement rate at confidence 1 - delta, from scipy's binomial test (its exact
  interval at level 1 - 2 delta has the one-sided bound as its upper end);
- ``automation_curve``: per threshold, the share of calls that would run unreviewed and
  that bound;
- ``recommend``: the lowest threshold whose bound stays at or below alpha, tested from the
  strictest down as Learn-then-Test's fixed-sequence procedure does (the first failure
  ends the sequence, so the family-wise risk stays at delta), with at least
  ``min_labels`` labelled calls above it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import binomtest

# The thresholds a recommendation may name: 0.50, 0.51, ... 0.99, 1.00.
THRESHOLDS = tuple(round(0.5 + i / 100, 2) for i in range(51))


@dataclass(frozen=True)
class Labelled:
    confidence: float
    agreed: bool


@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    count: int
    mean_confidence: float | None
    agreement: float | None


def reliability(labels: Sequence[Labelled], *, bins: int = 10) -> list[Bin]:
    """Equal-width bins over [0, 1]; the last bin includes 1."""
    width = 1 / bins
    grouped: list[list[Labelled]] = [[] for _ in range(bins)]
    for label in labels:
        grouped[min(int(label.confidence / width), bins - 1)].append(label)
    rows = []
    for i, members in enumerate(grouped):
        count = len(members)
        rows.append(
            Bin(
                low=round(i * width, 4),
                high=round((i + 1) * width, 4),
                count=count,
                mean_confidence=sum(m.confidence for m in members) / count if count else None,
                agreement=sum(m.agreed for m in members) / count if count else None,
            )
        )
    return rows


def expected_calibration_error(rows: Sequence[Bin]) -> float | None:
    total = sum(row.count for row in rows)
    if not total:
        return None
    return sum(
        row.count / total * abs(row.agreement - row.mean_confidence)
        for row in rows
        if row.count and row.agreement is not None and row.mean_confidence is not None
    )


def disagreement_bound(disagreed: int, n: int, *, delta: float) -> float:
    """The exact upper bound on the disagreement rate at confidence 1 - delta (1 with n=0)."""
    if not 0 < delta < 0.5:
        raise ValueError("delta is between 0 and 0.5")
    if n == 0:
        return 1.0
    interval = binomtest(disagreed, n).proportion_ci(confidence_level=1 - 2 * delta, method="exact")
    return float(interval.high)


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    unreviewed_share: float  # of all labelled calls, those at or above the threshold
    above: int
    disagreed: int
    bound: float


def automation_curve(
    labels: Sequence[Labelled], *, delta: float, thresholds: Sequence[float] = THRESHOLDS
) -> list[CurvePoint]:
    total = len(labels)
    points = []
    for threshold in thresholds:
        above = [label for label in labels if label.confidence >= threshold]
        disagreed = sum(not label.agreed for label in above)
        points.append(
            CurvePoint(
                threshold=threshold,
                unreviewed_share=len(above) / total if total else 0.0,
                above=len(above),
                disagreed=disagreed,
                bound=disagreement_bound(disagreed, len(above), delta=delta),
            )
        )
    return points


@dataclass(frozen=True)
class Recommendation:
    threshold: float | None  # None: no threshold can be recommended yet
    bound: float | None
    above: int
    reason: str
    labels_needed: int = 0  # more labelled calls before a threshold can be tested


def recommend(
    labels: Sequence[Labelled],
    *,
    alpha: float,
    delta: float,
    min_labels: int,
    thresholds: Sequence[float] = THRESHOLDS,
) -> Recommendation:
    """The lowest threshold whose bound is <= alpha, by fixed-sequence testing.

    Only thresholds at a stated confidence some labelled call had (rounded down to the
    grid) are candidates: below the lowest one the evidence is the same calls, and a
    lower threshold would let through confidences nobody has reviewed. From the strictest
    down: a threshold with fewer than ``min_labels`` labelled calls above it cannot be
    tested and is passed over (how many calls sit above a threshold depends on the stated
    confidences, not on what people decided); the first tested threshold whose bound
    exceeds alpha ends the sequence.
    """
    stated = {math.floor(label.confidence * 100 + 1e-9) / 100 for label in labels}
    candidates = sorted((t for t in thresholds if t in stated), reverse=True)
    curve = automation_curve(labels, delta=delta, thresholds=candidates)
    accepted: CurvePoint | None = None
    tested = False
    for point in curve:
        if point.above < min_labels:
            continue
        tested = True
        if point.bound > alpha:
            break
        accepted = point
    if accepted is not None:
        return Recommendation(
            threshold=accepted.threshold,
            bound=accepted.bound,
            above=accepted.above,
            reason=(
                f"at {accepted.threshold:.2f} the disagreement rate is at most "
                f"{accepted.bound:.3f} with confidence {1 - delta:.0%} "
                f"({accepted.disagreed} of {accepted.above} labelled calls disagreed)"
            ),
        )
    if not tested:
        most = max((point.above for point in curve), default=0)
        return Recommendation(
            threshold=None,
            bound=None,
            above=most,
            reason=f"{most} labelled calls; a threshold needs at least {min_labels}",
            labels_needed=min_labels - most,
        )
    strictest = next(point for point in curve if point.above >= min_labels)
    return Recommendation(
        threshold=None,
        bound=strictest.bound,
        above=strictest.above,
        reason=(
            f"even at {strictest.threshold:.2f} the bound is {strictest.bound:.3f}, above the "
            f"target {alpha:g}: keep reviewing these calls"
        ),
    )
