"""What a reviewer sees besides the call: the run's input, what the agent did, the records.

Built by the worker when a call is routed to review, outside the step's transaction (an
agent's records hook may be slow, or fail), and handed to the approvals side with the call
(runs.kernel.approvals.CallReview), which stores it on the request: the inbox reads one row and
shows the world as the agent saw it when it asked. It reads only the runtime's own
records (the run, its actions) and the agent's hook, so it lives on the runtime's side.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from agents.definition import Agent, Tool
from runs.models import Action, Run

log = logging.getLogger(__name__)

HISTORY_MAX = 20


def history_summary(run: Run) -> list[dict[str, Any]]:
    """The calls made so far, oldest first: tool, arguments, and how each ended."""
    actions = (
        Action.objects.filter(run=run).exclude(status="proposed").order_by("proposed_seq", "index")
    )
    rows = []
    for action in actions[:HISTORY_MAX]:
        result = action.result or {}
        error = result.get("error") if isinstance(result, dict) else None
        rows.append(
            {
                "tool": action.tool,
                "arguments": action.arguments,
                "status": action.status,
                "error": error.get("message", "")[:300] if isinstance(error, dict) else "",
            }
        )
    return rows


def review_context_build(
    *, run: Run, agent: Agent, tool: Tool, arguments: dict[str, Any]
) -> dict[str, Any]:
    """The context of one request. A failing records hook costs the records, not the review."""
    records: Any = {}
    if agent.review_context is not None:
        try:
            records = json.loads(
                json.dumps(
                    agent.review_context(tool.name, arguments, run.input), cls=DjangoJSONEncoder
                )
            )
        except Exception:
            log.exception(
                "the review context of %s failed; the request shows no records", tool.name
            )
            records = {"error": "the records could not be loaded"}
    return {"input": run.input, "history": history_summary(run), "records": records}
