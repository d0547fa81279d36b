"""The HTTP API: JSON in, JSON out, bearer-token authentication.

POST /api/runs      submit a run (Idempotency-Key header optional but recommended)
GET  /api/runs/<id> a run's state and totals
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from agentdesk.json_input import json_object_parse
from agentdesk.tokens import api_token_authenticate
from runs import selectors, services
from runs.models import Run


def api_error(status: int, message: str, details: Any = None) -> JsonResponse:
    body: dict[str, Any] = {"error": {"message": message}}
    if details is not None:
        body["error"]["details"] = details
    return JsonResponse(body, status=status)


def token_required(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        user = api_token_authenticate(request.headers.get("Authorization"))
        if user is None:
            response = api_error(401, "a valid 'Authorization: Bearer <token>' header is required")
            response["WWW-Authenticate"] = "Bearer"
            return response
        request.user = user
        return view(request, *args, **kwargs)

    return csrf_exempt(wrapper)


def run_json(run: Run) -> dict[str, Any]:
    return {
        "id": str(run.id),
        "agent": run.agent_name,
        "state": run.state,
        "trace_id": run.trace_id,
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
    }


@require_POST
@token_required
def runs_create(request: HttpRequest) -> JsonResponse:
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
            idempotency_key=request.headers.get("Idempotency-Key"),
        )
    except services.RunInputInvalid as exc:
        return api_error(400, exc.message, exc.details)
    except services.IdempotencyConflict as exc:
        return api_error(409, str(exc))
    return JsonResponse(run_json(run), status=201 if created else 200)


@require_GET
@token_required
def runs_detail(request: HttpRequest, run_id: str) -> JsonResponse:
    run = selectors.run_get_visible(user=request.user, run_id=str(run_id))
    if run is None:
        return api_error(404, "no such run")
    return JsonResponse(run_json(run))
