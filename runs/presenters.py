"""What the runs pages show of a run's input, from what its agent declares.

The runtime knows no agent's input: a run's title comes from the agent's ``run_title``
and its input is shown field by field, labelled from the agent's input schema.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agentdesk.schema_forms import schema_label
from agents.registry import agents
from runs.models import Run

log = logging.getLogger(__name__)

_LONG_FROM = 120  # longer strings than this, or with a line break, are shown as a block


def run_title(run: Run) -> str:
    """The run's title as its agent declares it; "" without one (or an unknown agent).

    A title function that fails on some old input costs that run its title, not the
    page: the failure is logged with its traceback.
    """
    agent = agents().get(run.agent_name)
    if agent is None or agent.run_title is None or not isinstance(run.input, Mapping):
        return ""
    try:
        return str(agent.run_title(run.input))
    except Exception:
        log.exception("run_title of agent %r failed on run %s", agent.name, run.id)
        return ""


def runs_titled(runs: Iterable[Run]) -> list[Run]:
    """The runs, each with its ``display_title`` set for the template."""
    titled = list(runs)
    for run in titled:
        run.display_title = run_title(run)  # type: ignore[attr-defined]
    return titled


@dataclass(frozen=True)
class InputRow:
    label: str
    value: str
    block: bool  # prose (a line break or long): shown as a block of its own


def input_rows(run: Run) -> list[InputRow]:
    """The run's input field by field: the schema's order and titles, then any others."""
    run_input = run.input if isinstance(run.input, Mapping) else {"input": run.input}
    agent = agents().get(run.agent_name)
    properties: dict[str, Any] = (
        agent.input_schema.model_json_schema().get("properties", {}) if agent else {}
    )
    names = [name for name in properties if name in run_input]
    names += [name for name in run_input if name not in properties]
    rows = []
    for name in names:
        value = run_input[name]
        if value is None or value == "":
            continue
        text = value if isinstance(value, str) else json.dumps(value, indent=2)
        label = schema_label(name, properties.get(name, {}))
        rows.append(InputRow(label, text, "\n" in text or len(text) > _LONG_FROM))
    return rows
