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
from agentdesk.tokens import api_token_authenticate, api_token_used
from runs import selectors, services
from runs.models import Run


def api_error(status: int, message: str, details: Any = None) -> JsonResponse:
    body: dict[str, Any] = {"error": {"message": message}}
    if details is not None:
        body["error"]["details"] = details
    return JsonResponse(body, status=status)


# A call refused for want of access (no such object to this user, or read only): it does
# not count as a use of the token, so ``last_used_at`` does not move for a probe.
_DENIED = (403, 404)


def token_required(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        token = api_token_authenticate(request.headers.get("Authorization"))
        if token is None:
            # Unknown, revoked and expired keys alike: the caller learns nothing about which.
            response = api_error(401, "a valid 'Authorization: Bearer <token>' header is required")
            response["WWW-Authenticate"] = "Bearer"
            return response
        request.user = token.user
        response = view(request, *args, **kwargs)
        if response.status_code not in _DENIED:
            api_token_used(token=token)
        return response

    return csrf_exempt(wrapper)


def run_json(run: Run, *, outcome_withheld: bool = False) -> dict[str, Any]:
    """The run's state and totals; ``outcome_withheld``: see runs.selectors.RunView."""
    body: dict[str, Any] = {
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
        # Why the outcome is not a plain success (runs.models.Degradation); empty if it is.
        "degraded": list(run.degraded or ()),
    }
    if outcome_withheld:
        # Written after a call reviewed in a queue this reader may not open: it can repeat
        # that call's arguments or its reviewer's feedback.
        body |= {"output": None, "error": None, "withheld": ["output", "error"]}
    return body


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
    view = selectors.run_get_visible(user=request.user, run_id=str(run_id))
    if view is None:
        return api_error(404, "no such run")
    return JsonResponse(run_json(view.run, outcome_withheld=view.outcome_withheld))
