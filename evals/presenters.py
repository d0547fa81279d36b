"""What the curation pages show: candidates as cards, examples as rows, the forms' start.

Views fetch and decide; these turn rows into what a template prints, so that the
templates hold no logic beyond loops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agentdesk.schema_forms import initial_arguments
from agents.definition import Agent, Tool
from evals import datasets
from evals.forms import ExpectationForm
from evals.models import Dataset, DatasetVersion, Eval, EvalResult, EvalState
from reviews.models import GoldenCandidate

TAIL = 4  # messages of the conversation shown on a card
TEXT_MAX = 400


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def match_summary(name: str, match: dict[str, Any]) -> str:
    """One argument's match in words: ``amount ≈ 29.0 ± 0.01``."""
    mode = match.get("mode", "exact")
    if mode == "any":
        return f"{name}: any"
    if mode == "one_of":
        return f"{name} ∈ {_short(match.get('options'))}"
    if mode == "tolerance":
        return f"{name} ≈ {_short(match.get('value'))} ± {match.get('tolerance')}"
    return f"{name} = {_short(match.get('value'))}"


def call_summary(call: dict[str, Any], agent: Agent) -> str:
    """An expected call in one line: ``issue_refund(order_id = SO-1002, reason: any)``.

    The arguments in the order the tool declares them (jsonb does not keep key order).
    """
    arguments = call.get("arguments") or {}
    tool = next((t for t in agent.tools if t.name == call.get("tool")), None)
    declared = list(tool.input_schema.model_fields) if tool is not None else []
    names = [n for n in declared if n in arguments] + [n for n in arguments if n not in declared]
    inner = ", ".join(match_summary(name, arguments[name]) for name in names)
    return f"{call.get('tool', '?')}({inner})"


@dataclass(frozen=True)
class ExampleRow:
    kind: str
    id: str
    tags: list[str]
    calls: list[str]
    forbidden: list[str]
    source: str
    note: str


def _source(source: dict[str, Any]) -> str:
    if "candidate" in source:
        return f"correction {source['candidate']}"
    if "run" in source:
        return f"run {str(source['run'])[:8]}"
    return "by hand"


def example_rows(examples: list[dict[str, Any]], agent: Agent) -> list[ExampleRow]:
    return [
        ExampleRow(
            kind=str(example.get("kind", "")),
            id=str(example.get("id", "")),
            tags=list(example.get("tags") or []),
            calls=[call_summary(call, agent) for call in example.get("expected_calls") or []],
            forbidden=list(example.get("forbidden_tools") or []),
            source=_source(example.get("source") or {}),
            note=str(example.get("note") or ""),
        )
        for example in examples
    ]


@dataclass(frozen=True)
class DatasetRow:
    dataset: Dataset
    latest: DatasetVersion | None
    examples: int


def dataset_rows(found: list[Dataset]) -> list[DatasetRow]:
    rows = []
    for dataset in found:
        latest = datasets.dataset_latest(dataset=dataset)
        rows.append(DatasetRow(dataset, latest, len(latest.examples) if latest else 0))
    return rows


# --- candidates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Said:
    """One message of the conversation tail."""

    role: str
    text: str
    calls: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ArgumentChange:
    name: str
    proposed: str
    corrected: str
    changed: bool


@dataclass(frozen=True)
class CandidateCard:
    candidate: GoldenCandidate
    tool: str
    kind: str  # "edit" or "reject"
    tail: list[Said]
    earlier: int  # messages before the tail, not shown
    proposed: list[tuple[str, str]]
    changes: list[ArgumentChange]
    feedback: str
    has_conversation: bool
    expired: bool = False  # the SLA's default, not a person's decision


def _said(message: dict[str, Any]) -> Said:
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        calls.append(f"{function.get('name', '?')}({_short(function.get('arguments', ''), 120)})")
    text = str(message.get("content") or "")
    if len(text) > TEXT_MAX:
        text = text[: TEXT_MAX - 1] + "…"
    return Said(role=str(message.get("role", "")), text=text, calls=calls)


def candidate_card(candidate: GoldenCandidate, agent: Agent) -> CandidateCard:
    proposal = candidate.proposal or {}
    correction = candidate.correction or {}
    proposed = proposal.get("arguments") or {}
    corrected = correction.get("arguments") or {}
    if not isinstance(proposed, dict):
        proposed = {}
    if not isinstance(corrected, dict):
        corrected = {}
    messages = datasets.candidate_example(candidate=candidate)["messages"]
    tail = messages[-TAIL:]
    # In the order the tool declares them (jsonb does not keep key order).
    tool = candidate_tool(agent, candidate)
    declared = list(tool.input_schema.model_fields) if tool is not None else []
    names = [name for name in declared if name in proposed or name in corrected]
    names += [name for name in [*proposed, *corrected] if name not in names]
    names = list(dict.fromkeys(names))
    return CandidateCard(
        candidate=candidate,
        tool=str(proposal.get("tool", "")),
        kind="edit" if correction.get("kind") == "edit" else "reject",
        tail=[_said(m) for m in tail if isinstance(m, dict)],
        earlier=len(messages) - len(tail),
        proposed=[(name, _short(proposed[name], 200)) for name in names if name in proposed],
        changes=[
            ArgumentChange(
                name=name,
                proposed=_short(proposed[name], 200) if name in proposed else "—",
                corrected=_short(corrected[name], 200) if name in corrected else "—",
                changed=proposed.get(name) != corrected.get(name),
            )
            for name in names
        ],
        feedback=str(correction.get("feedback") or ""),
        has_conversation=bool(messages),
        expired=bool(correction.get("expired")),
    )


def candidate_tool(agent: Agent, candidate: GoldenCandidate) -> Tool | None:
    """The tool the candidate's proposal called, if the agent still has it."""
    name = (candidate.proposal or {}).get("tool", "")
    return next((tool for tool in agent.tools if tool.name == name), None)


def expectation_form(
    *,
    candidate: GoldenCandidate,
    tool: Tool,
    dataset_names: list[str],
    data: Any = None,
) -> ExpectationForm:
    """The expectation form, starting from the example the correction gives."""
    example = datasets.candidate_example(candidate=candidate)
    corrected = (candidate.correction or {}).get("arguments") or {}
    if not isinstance(corrected, dict) or not corrected:
        corrected = (candidate.proposal or {}).get("arguments") or {}
    schema = tool.input_schema.model_json_schema()
    return ExpectationForm(
        data,
        tool=tool,
        dataset_names=dataset_names,
        initial={
            "expect_call": bool(example.get("expected_calls")),
            "forbid_tool": bool(example.get("forbidden_tools")),
            "reason": example.get("reason", ""),
            **({"dataset": dataset_names[0]} if dataset_names else {}),
        },
        value_initial=initial_arguments(corrected if isinstance(corrected, dict) else {}, schema),
    )


def example_json(example: dict[str, Any]) -> str:
    """An example as the hand-written form shows it: indented, keys in their order."""
    return json.dumps(example, indent=2, ensure_ascii=False)


def example_template(agent: Agent) -> dict[str, Any]:
    """A step example to start a hand-written one from: the agent's first tool, any args."""
    tool = agent.tools[0] if agent.tools else None
    return {
        "kind": "step",
        "id": "my-example",
        "tags": [],
        "messages": [{"role": "user", "content": "What the customer wrote."}],
        "expected_calls": (
            [
                {
                    "tool": tool.name,
                    "arguments": {name: {"mode": "any"} for name in tool.input_schema.model_fields},
                }
            ]
            if tool
            else []
        ),
    }


# --- evals -----------------------------------------------------------------------------------

HEADLINE = ("tool_selection", "argument_match", "policy_match", "task_completion", "judge")
METRIC_LABELS = {
    "tool_selection": "Tool selection",
    "argument_match": "Argument match",
    "policy_match": "Policy outcome",
    "calls_made": "Expected calls made",
    "forbidden_absent": "No forbidden call",
    "end_state": "End state",
    "task_completion": "Task completion",
    "judge": "Judge",
}
CHART_W, CHART_H, CHART_PAD = 640, 180, 24
SERIES_COLOURS = ("#2f5bd3", "#12805c", "#b54708", "#7a2ed6", "#c01048")


@dataclass(frozen=True)
class EvalRow:
    eval: Eval
    headline: list[tuple[str, float | None]]


def eval_rows(found: list[Eval]) -> list[EvalRow]:
    return [
        EvalRow(
            evaluation,
            [
                (name, (evaluation.metrics.get("metrics", {}).get(name) or {}).get("mean"))
                for name in HEADLINE
            ],
        )
        for evaluation in found
    ]


@dataclass(frozen=True)
class Series:
    metric: str
    label: str
    colour: str
    points: str  # the SVG polyline's points
    dots: list[tuple[float, float, str]]  # x, y, title


def eval_chart(finished: list[Eval]) -> tuple[list[Series], list[tuple[float, str]]]:
    """The headline metrics of finished evals, oldest first, as SVG series (0..1 upwards).

    The table of evals below the chart holds the same numbers: the chart's text
    alternative. Ticks name each eval's release.
    """
    if not finished:
        return [], []
    step = (CHART_W - 2 * CHART_PAD) / max(len(finished) - 1, 1)

    def x(i: int) -> float:
        return round(CHART_PAD + i * step, 1)

    def y(value: float) -> float:
        return round(CHART_H - CHART_PAD - value * (CHART_H - 2 * CHART_PAD), 1)

    series = []
    for colour, metric in zip(SERIES_COLOURS, HEADLINE, strict=False):
        dots = []
        for i, evaluation in enumerate(finished):
            value = (evaluation.metrics.get("metrics", {}).get(metric) or {}).get("mean")
            if value is not None:
                title = f"eval {evaluation.pk}, release {evaluation.release.number}: {value:.3f}"
                dots.append((x(i), y(value), title))
        if dots:
            points = " ".join(f"{dx},{dy}" for dx, dy, _ in dots)
            series.append(Series(metric, METRIC_LABELS[metric], colour, points, dots))
    ticks = [(x(i), f"r{e.release.number}") for i, e in enumerate(finished)]
    return series, ticks


def eval_list_context(agent: Agent, *, form: Any) -> dict[str, Any]:
    found = list(
        Eval.objects.filter(agent_name=agent.name)
        .select_related("release", "dataset_version__dataset", "created_by")
        .order_by("-created_at")[:50]
    )
    finished = [e for e in reversed(found) if e.state == EvalState.FINISHED]
    series, ticks = eval_chart(finished)
    return {
        "agent": agent,
        "rows": eval_rows(found),
        "headline": [(name, METRIC_LABELS[name]) for name in HEADLINE],
        "series": series,
        "ticks": ticks,
        "chart": {
            "w": CHART_W,
            "h": CHART_H,
            "pad": CHART_PAD,
            "top": CHART_PAD,
            "bottom": CHART_H - CHART_PAD,
        },
        "form": form,
        "datasets": list(Dataset.objects.filter(agent_name=agent.name).order_by("name")),
    }


@dataclass(frozen=True)
class ResultRow:
    result: EvalResult
    scores: list[tuple[str, float | None]]


def eval_detail_context(evaluation: Eval) -> dict[str, Any]:
    metrics = evaluation.metrics.get("metrics", {})
    results = list(EvalResult.objects.filter(eval=evaluation).order_by("index"))
    names = [name for name in METRIC_LABELS if any(name in r.scores for r in results)]
    others = list(
        Eval.objects.filter(dataset_version=evaluation.dataset_version, state=EvalState.FINISHED)
        .exclude(pk=evaluation.pk)
        .select_related("release")
        .order_by("-finished_at")[:20]
    )
    return {
        "agent_name": evaluation.agent_name,
        "evaluation": evaluation,
        "metric_rows": [
            (METRIC_LABELS[name], metrics[name]["mean"], metrics[name]["n"])
            for name in METRIC_LABELS
            if name in metrics
        ],
        "usage": evaluation.metrics.get("usage", {}),
        "columns": [(name, METRIC_LABELS[name]) for name in names],
        "results": [ResultRow(r, [(name, r.scores.get(name)) for name in names]) for r in results],
        "others": others,
    }


def example_diff_context(candidate: Eval, baseline: Eval, index: int) -> dict[str, Any] | None:
    examples = candidate.dataset_version.examples
    if not 0 <= index < len(examples):
        return None
    results = {
        r.eval_id: r for r in EvalResult.objects.filter(eval__in=[candidate, baseline], index=index)
    }
    if candidate.pk not in results or baseline.pk not in results:
        return None
    example = examples[index]
    names = [
        name
        for name in METRIC_LABELS
        if name in results[candidate.pk].scores or name in results[baseline.pk].scores
    ]
    return {
        "candidate": candidate,
        "baseline": baseline,
        "example": example,
        "expected_json": json.dumps(
            {
                key: example.get(key)
                for key in (
                    "expected_calls",
                    "forbidden_tools",
                    "expected_policy",
                    "end_state",
                    "rubric",
                )
                if example.get(key)
            },
            indent=2,
            ensure_ascii=False,
        ),
        "sides": [
            ("Baseline", baseline, results[baseline.pk]),
            ("Candidate", candidate, results[candidate.pk]),
        ],
        "score_rows": [
            (
                METRIC_LABELS[name],
                results[baseline.pk].scores.get(name),
                results[candidate.pk].scores.get(name),
            )
            for name in names
        ],
    }
