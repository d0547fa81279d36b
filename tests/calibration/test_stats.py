"""Calibration statistics on hand-built counts, where the right answer is known."""

from __future__ import annotations

import pytest
from scipy.stats import binom

from calibration.stats import (
    Labelled,
    automation_curve,
    disagreement_bound,
    expected_calibration_error,
    recommend,
    reliability,
)


def test_the_bound_is_the_exact_clopper_pearson_upper_limit() -> None:
    # No disagreement in n: the bound solves (1 - p)^n = delta.
    assert disagreement_bound(0, 150, delta=0.05) == pytest.approx(1 - 0.05 ** (1 / 150))
    # k of n: the bound is the p at which seeing k or fewer has probability delta.
    bound = disagreement_bound(3, 100, delta=0.05)
    assert binom.cdf(3, 100, bound) == pytest.approx(0.05, abs=1e-9)
    assert bound == pytest.approx(0.0757107937, abs=1e-9)
    assert disagreement_bound(0, 0, delta=0.05) == 1.0
    with pytest.raises(ValueError, match="delta"):
        disagreement_bound(1, 10, delta=0.6)


def _labels(*groups: tuple[float, int, int]) -> list[Labelled]:
    """(confidence, agreed, disagreed) per group."""
    labels = []
    for confidence, agreed, disagreed in groups:
        labels += [Labelled(confidence, True)] * agreed
        labels += [Labelled(confidence, False)] * disagreed
    return labels


def test_reliability_bins_and_the_expected_calibration_error() -> None:
    labels = _labels((0.95, 8, 2), (0.55, 5, 5))
    rows = reliability(labels)
    filled = [(r.low, r.count, r.mean_confidence, r.agreement) for r in rows if r.count]
    assert filled == [(0.5, 10, pytest.approx(0.55), 0.5), (0.9, 10, pytest.approx(0.95), 0.8)]
    # Half the calls 0.05 off, half 0.15 off.
    assert expected_calibration_error(rows) == pytest.approx(0.10)
    assert reliability([Labelled(1.0, True)])[-1].count == 1  # 1.0 falls in the last bin
    assert expected_calibration_error(reliability([])) is None


def test_the_curve_counts_calls_at_or_above_each_threshold() -> None:
    labels = _labels((0.99, 200, 0), (0.9, 90, 10))
    strict, loose = automation_curve(labels, delta=0.05, thresholds=(0.99, 0.9))
    assert (strict.above, strict.disagreed, strict.unreviewed_share) == (200, 0, 200 / 300)
    assert (loose.above, loose.disagreed, loose.unreviewed_share) == (300, 10, 1.0)
    assert strict.bound == pytest.approx(disagreement_bound(0, 200, delta=0.05))


def test_overconfident_calls_below_the_top_get_a_stricter_threshold() -> None:
    # The model says 0.9 and is wrong one time in ten; at 0.99 it is right every time.
    labels = _labels((0.99, 300, 0), (0.9, 90, 10))
    advice = recommend(labels, alpha=0.02, delta=0.05, min_labels=100)
    assert advice.threshold is not None
    assert advice.threshold > 0.9  # a static 0.9 would let the wrong ones through
    # At 0.9 the sequence stops; nothing between was ever stated, so 0.99 it is.
    assert advice.threshold == 0.99
    assert advice.above == 300
    assert advice.bound is not None
    assert advice.bound <= 0.02


def test_no_recommendation_below_the_minimum_count_and_how_many_more() -> None:
    advice = recommend(_labels((0.99, 60, 0)), alpha=0.02, delta=0.05, min_labels=100)
    assert (advice.threshold, advice.labels_needed) == (None, 40)
    assert "60 labelled calls" in advice.reason


def test_no_recommendation_when_even_the_strictest_tested_threshold_is_too_risky() -> None:
    advice = recommend(_labels((0.99, 180, 20)), alpha=0.02, delta=0.05, min_labels=100)
    assert advice.threshold is None
    assert advice.labels_needed == 0
    assert "keep reviewing" in advice.reason


def test_a_threshold_is_never_below_every_confidence_anyone_reviewed() -> None:
    advice = recommend(_labels((0.97, 200, 0)), alpha=0.02, delta=0.05, min_labels=100)
    assert advice.threshold == 0.97  # not 0.50: nobody has seen what the model does there
