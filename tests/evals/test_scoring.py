"""The scores of one example and the aggregates of an eval, and the comparison's statistics:
pure functions, so each rule is pinned by a small case."""

from __future__ import annotations

import pytest

from evals.comparison import metric_deltas
from evals.scoring import (
    Call,
    Scored,
    aggregate,
    argument_matches,
    end_state_holds,
    error_scores,
    step_scores,
    task_scores,
)

REFUND = {
    "tool": "issue_refund",
    "arguments": {
        "order_id": {"mode": "exact", "value": "SO-1002"},
        "amount": {"mode": "tolerance", "value": 29.0, "tolerance": 0.5},
        "reason": {"mode": "any"},
    },
}


@pytest.mark.parametrize(
    ("match", "present", "actual", "expected"),
    [
        ({"mode": "exact", "value": "SO-1"}, True, "SO-1", True),
        ({"mode": "exact", "value": "SO-1"}, True, "so-1", False),
        ({"mode": "exact", "value": 25}, True, "25.00", True),  # one amount, three spellings
        ({"mode": "exact", "value": 25}, False, None, False),
        ({"mode": "tolerance", "value": 29.0, "tolerance": 0.5}, True, 29.5, True),
        ({"mode": "tolerance", "value": 29.0, "tolerance": 0.5}, True, 29.51, False),
        ({"mode": "tolerance", "value": 29.0, "tolerance": 0.5}, True, "lots", False),
        ({"mode": "one_of", "options": ["low", "normal"]}, True, "normal", True),
        ({"mode": "one_of", "options": ["low", "normal"]}, True, "urgent", False),
        ({"mode": "any"}, True, None, True),
        ({"mode": "any"}, False, None, False),
    ],
)
def test_each_match_mode(match: dict, present: bool, actual: object, expected: bool) -> None:
    assert argument_matches(match, present, actual) is expected


def test_a_step_example_scores_selection_arguments_and_policy() -> None:
    example = {
        "kind": "step",
        "expected_calls": [REFUND],
        "expected_policy": {"outcome": "review", "queue": "refunds"},
    }
    right = Call(
        "issue_refund", {"order_id": "SO-1002", "amount": 29.2, "reason": "x"}, "review", "refunds"
    )
    assert step_scores(example, [right]) == {
        "tool_selection": 1.0,
        "argument_match": 1.0,
        "policy_match": 1.0,
    }
    # A third of the arguments wrong, and the policy let it run unreviewed.
    wrong = Call("issue_refund", {"order_id": "SO-1002", "amount": 129.0, "reason": "x"}, "execute")
    scores = step_scores(example, [wrong])
    assert scores["tool_selection"] == 1.0
    assert scores["argument_match"] == pytest.approx(2 / 3)
    assert scores["policy_match"] == 0.0
    # Another tool altogether scores nothing.
    assert step_scores(example, [Call("send_reply", {}, "execute")]) == {
        "tool_selection": 0.0,
        "argument_match": 0.0,
        "policy_match": 0.0,
    }


def test_a_rejection_example_is_met_by_not_calling_the_forbidden_tool() -> None:
    example = {"kind": "step", "forbidden_tools": ["issue_refund"]}
    assert step_scores(example, [Call("send_reply", {"text": "no"})])["tool_selection"] == 1.0
    assert step_scores(example, [])["tool_selection"] == 1.0
    assert step_scores(example, [Call("issue_refund", {})])["tool_selection"] == 0.0
    assert step_scores(example, [])["argument_match"] is None


def test_a_task_example_needs_the_calls_in_order_when_ordered() -> None:
    lookup = {"tool": "lookup_order", "arguments": {"order_id": {"mode": "exact", "value": "SO-1"}}}
    reply = {"tool": "send_reply", "arguments": {}}
    calls = [Call("send_reply", {"text": "hi"}), Call("lookup_order", {"order_id": "SO-1"})]
    unordered = {"kind": "task", "expected_calls": [lookup, reply], "end_state": {}}
    ordered = {**unordered, "ordered": True}
    assert (
        task_scores(unordered, calls, state="succeeded", answer="", judge=None)["calls_made"] == 1
    )
    assert (
        task_scores(ordered, calls, state="succeeded", answer="", judge=None)["calls_made"] == 0.5
    )


def test_task_completion_needs_the_calls_no_forbidden_one_and_the_end_state() -> None:
    example = {
        "kind": "task",
        "expected_calls": [{"tool": "lookup_order", "arguments": {}}],
        "forbidden_tools": ["issue_refund"],
        "end_state": {"state": "succeeded", "output_contains": ["SO-1"]},
        "rubric": "- names the order",
    }
    done = [Call("lookup_order", {"order_id": "SO-1"})]
    good = task_scores(example, done, state="succeeded", answer="About so-1: shipped.", judge=0.8)
    assert good == {
        "calls_made": 1.0,
        "forbidden_absent": 1.0,
        "end_state": 1.0,
        "task_completion": 1.0,
        "judge": 0.8,
    }
    refunded = task_scores(
        example, [*done, Call("issue_refund", {})], state="succeeded", answer="SO-1", judge=1.0
    )
    assert (refunded["forbidden_absent"], refunded["task_completion"]) == (0.0, 0.0)
    assert not end_state_holds(example["end_state"], "needs_human", "SO-1")
    assert not end_state_holds(example["end_state"], "succeeded", "your order")


def test_an_example_that_errored_scores_zero_in_its_kind_and_is_counted() -> None:
    step = {"kind": "step", "expected_calls": [REFUND]}
    task = {"kind": "task", "rubric": "x"}
    results = [
        Scored(
            {"tool_selection": 1.0, "argument_match": 1.0, "policy_match": None},
            {"cost_usd": 0.002, "steps": 1},
        ),
        Scored(error_scores(step), {}, error=True),
        Scored(error_scores(task), {}, error=True),
    ]
    summary = aggregate(results)
    assert summary["examples"] == 3
    assert summary["errors"] == 2
    assert summary["metrics"]["tool_selection"] == {"mean": 0.5, "n": 2}
    assert "policy_match" not in summary["metrics"]  # no example expects a policy outcome
    assert summary["metrics"]["judge"] == {"mean": 0.0, "n": 1}
    assert summary["usage"]["total"]["cost_usd"] == 0.002
    assert summary["usage"]["per_example"]["steps"] == pytest.approx(1 / 3, abs=1e-6)


def test_the_delta_has_a_paired_interval_and_an_exact_test_for_0_1_metrics() -> None:
    baseline = {f"e{i}": {"tool_selection": 1.0, "argument_match": 1.0} for i in range(40)}
    candidate = {key: dict(scores) for key, scores in baseline.items()}
    for i in range(10):  # ten examples regress on selection, and their arguments by half
        candidate[f"e{i}"] = {"tool_selection": 0.0, "argument_match": 0.5}
    deltas = {d.metric: d for d in metric_deltas(baseline, candidate)}
    selection = deltas["tool_selection"]
    assert (selection.baseline, selection.candidate, selection.delta_points) == (1.0, 0.75, -25.0)
    assert selection.low is not None
    assert selection.high is not None
    assert selection.low < -0.25 < selection.high < 0  # the interval holds the point, below 0
    assert selection.pairs == 40
    assert selection.p_value == pytest.approx(2 * 0.5**10)  # 10 of 10 discordant pairs fell
    assert deltas["argument_match"].p_value is None  # not a 0/1 metric
    same = metric_deltas(baseline, baseline)[0]
    assert (same.delta, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_only_examples_both_evals_scored_are_paired() -> None:
    baseline = {"a": {"tool_selection": 1.0}, "b": {"tool_selection": 0.0}}
    candidate = {"a": {"tool_selection": 1.0}, "c": {"tool_selection": 1.0}}
    (delta,) = metric_deltas(baseline, candidate)
    assert (delta.pairs, delta.delta, delta.low, delta.high) == (1, 0.0, None, None)
