"""The curation pages' services: a finished run as a task example, one example by hand,
and JSONL checked for what the database refuses before ``evals.datasets`` reads it.

Every write goes through ``evals.datasets`` (which locks, versions and audits); this
module only builds and checks what the pages hand it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agentdesk.json_input import JSONInputInvalid, json_input_loads
from agents.registry import UnknownAgent, agent_get
from evals import datasets
from evals.examples import ExamplesRefused, example_checked
from evals.models import Dataset, DatasetVersion
from reviews.models import GoldenCandidate
from runs.models import ActionStatus, Run

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class RunNotFinished(datasets.DatasetRefused):
    """A run still going (or parked): its outcome is not known, so it is no example yet."""


def run_task_example(*, run: Run) -> dict[str, Any]:
    """A task example from a finished run: its input, its succeeded calls, its end state.

    The calls are expected as a set (not ``ordered``), each argument exactly as it ran:
    the arguments a reviewer approved (an edit included) where there are any. The rubric
    is left for the curator to write.
    """
    if not run.is_terminal:
        raise RunNotFinished(f"Run {run.pk} is {run.state}: promote it when it has finished.")
    calls = []
    for action in run.actions.filter(status=ActionStatus.SUCCEEDED).order_by(
        "proposed_seq", "index"
    ):
        arguments = action.approved_arguments or action.arguments or {}
        calls.append(
            {
                "tool": action.tool,
                "arguments": {
                    name: {"mode": "exact", "value": value} for name, value in arguments.items()
                },
            }
        )
    return {
        "kind": "task",
        "id": f"run-{run.pk}",
        "tags": [],
        "note": "",
        "source": {"run": str(run.pk)},
        "input": run.input,
        "ordered": False,
        "expected_calls": calls,
        "forbidden_tools": [],
        "end_state": {"state": run.state},
        "rubric": "",
    }


def _agent(agent_name: str) -> Any:
    try:
        return agent_get(agent_name)
    except UnknownAgent:
        raise datasets.DatasetRefused(f"There is no agent {agent_name!r}.") from None


def example_parse(*, text: str) -> Any:
    """The JSON of one example as a person typed it; ExamplesRefused saying what is wrong."""
    try:
        return json_input_loads(text, what="the example")
    except JSONInputInvalid as exc:
        raise ExamplesRefused([f"example: {exc}"]) from None


def example_add(*, dataset: Dataset, example: Any, note: str, user: User | None) -> DatasetVersion:
    """One example after the latest version's, as the next version.

    Checked alone first, so the errors name the example (``example.expected_calls[0]...``)
    rather than its index in the whole list; then ``dataset_add`` checks the list (ids).
    """
    _checked, errors = example_checked(_agent(dataset.agent_name), example, where="example")
    if errors:
        raise ExamplesRefused(errors)
    return datasets.dataset_add(dataset=dataset, examples=[example], note=note, user=user)


def jsonl_import(
    *, dataset: Dataset, text: str, note: str, user: User | None, replace: bool
) -> DatasetVersion:
    """``dataset_import_jsonl``, after refusing lines PostgreSQL would not store.

    ``json.loads`` accepts a NUL character, lone surrogates and NaN, which jsonb refuses
    (a 500 after every check passed): each such line is named here instead.
    """
    errors: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            json_input_loads(line, what="it")
        except JSONInputInvalid as exc:
            errors.append(f"line {i + 1}: {exc}")
            lines[i] = ""  # blank: the other lines keep their numbers, and are checked
    if errors:
        try:
            datasets.jsonl_examples(agent_name=dataset.agent_name, text="\n".join(lines))
        except ExamplesRefused as exc:
            errors += exc.errors
        raise ExamplesRefused(sorted(errors, key=_line_number))
    return datasets.dataset_import_jsonl(
        dataset=dataset, text=text, note=note, user=user, replace=replace
    )


def _line_number(error: str) -> int:
    head = error.split(":", 1)[0].split(".", 1)[0].split("[", 1)[0]
    number = head.removeprefix("line ")
    return int(number) if number.isdigit() else 0


def candidate_tagged(*, candidate: GoldenCandidate, tags: Sequence[str]) -> dict[str, Any]:
    """The example a correction gives (``candidate_example``), with the curator's tags."""
    example = datasets.candidate_example(candidate=candidate)
    example["tags"] = list(tags)
    return example
