"""The HTTP API of runs: JSON in, JSON out, bearer-token authentication (agentdesk.api).

POST /api/runs      submit a run (Idempotency-Key header optional but recommended)
GET  /api/runs/<id> a run's state and totals
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from ninja import Header, Router, Schema, Status

from agentdesk.api import api_error, body_documented, refusals
from agentdesk.json_input import json_object_parse
from runs import selectors, services
from runs.models import Run, RunState

router = Router(tags=["runs"])


class RunIn(Schema):
    agent: str
    # Checked against the agent's declared input schema; a mismatch is a 400 listing why.
    input: dict[str, Any]


class RunOut(Schema):
    id: str
    agent: str
    state: RunState
    trace_id: str
    # The number of the agent's release the run was created under (releases.Release,
    # per agent); null for runs from before releases.
    release: int | None
    prompt_version: str
    created_at: str
    finished_at: str | None
    steps: int
    tool_calls: int
    tokens_in: int
    tokens_out: int
    cost_usd: str
    output: str | None
    error: Any
    degraded: list[str]
    # Present, naming the fields set to null, when the reader may not see the outcome.
    withheld: list[str] | None = None


def run_json(run: Run, *, outcome_withheld: bool = False) -> dict[str, Any]:
    """The run's state and totals; ``outcome_withheld``: see runs.selectors.RunView."""
    body: dict[str, Any] = {
        "id": str(run.id),
        "agent": run.agent_name,
        "state": run.state,
        "trace_id": run.trace_id,
        "release": run.release.number if run.release is not None else None,
        "prompt_version": run.prompt_version,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "steps": run.next_seq,
        "tool_calls": run.tool_calls,
        "tokens_in": run.tokens_in,
        "tokens_out": run.tokens_out,
        "cost_usd": str(run.cost_usd),
        "output": run.output,
        "error": run.error,
        # Why the outcome is not a plain success (runs.models.Degradation); empty if it is.
        "degraded": list(run.degraded or ()),
    }
    if outcome_withheld:
        # Written after a call reviewed in a queue this reader may not open: it can repeat
        # that call's arguments or its reviewer's feedback.
        body |= {"output": None, "error": None, "withheld": ["output", "error"]}
    return body


@router.post(
    "/runs",
    response={201: RunOut, 200: RunOut, **refusals(400, 403, 409)},
    url_name="api-runs-create",
    exclude_unset=True,
    openapi_extra=body_documented(RunIn),
    summary="Submit a run (201; 200 for a repeated Idempotency-Key)",
)
def runs_create(
    request: HttpRequest, idempotency_key: str | None = Header(None, alias="Idempotency-Key")
) -> Status[dict[str, Any]] | JsonResponse:
    if not request.user.has_perm("runs.add_run"):
        return api_error(403, "this token's user may not submit runs")
    if len(request.body) > settings.AGENTDESK_MAX_INPUT_BYTES + 1024:
        return api_error(
            400, f"the body is over the limit of {settings.AGENTDESK_MAX_INPUT_BYTES} bytes"
        )
    try:
        body = json_object_parse(request.body)
    except ValueError as exc:
        return api_error(400, str(exc))
    missing = [name for name in ("agent", "input") if name not in body]
    if missing:
        return api_error(400, f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(body) - {"agent", "input"})
    if unknown:
        return api_error(400, f"unknown field(s): {', '.join(unknown)}")
    if not isinstance(body["agent"], str):
        return api_error(400, "'agent' must be a string")
    try:
        run, created = services.run_submit(
            agent_name=body["agent"],
            run_input=body["input"],
            submitted_by=request.user,
            idempotency_key=idempotency_key,
        )
    except services.RunInputInvalid as exc:
        return api_error(400, exc.message, exc.details)
    except services.IdempotencyConflict as exc:
        return api_error(409, str(exc))
    return Status(201 if created else 200, run_json(run))


@router.get(
    "/runs/{uuid:run_id}",
    response={200: RunOut, **refusals(404)},
    url_name="api-runs-detail",
    exclude_unset=True,
    summary="A run's state and totals",
)
def runs_detail(request: HttpRequest, run_id: uuid.UUID) -> dict[str, Any] | JsonResponse:
    view = selectors.run_get_visible(user=request.user, run_id=str(run_id))
    if view is None:
        return api_error(404, "no such run")
    return run_json(view.run, outcome_withheld=view.outcome_withheld)
