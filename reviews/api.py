"""The approvals over HTTP: for chat tools and scripts that decide outside the browser.

GET  /api/requests                pending requests the token's user may see (due first)
GET  /api/requests/<id>           one request: the call, its arguments and hash, the context
POST /api/requests/<id>/decision  {"decision": "approve", "args_hash": "..."}
                                  {"decision": "edit", "args_hash": "...", "arguments": {...}}
                                  {"decision": "reject", "feedback": "..."}

The same rules as the inbox: a request the user may not see is 404; one they may see but
not decide is 403, and nothing changes; an approval must name the hash of the arguments
it approves; a request someone else decided first is 409, with who and how.
"""

from __future__ import annotations

from typing import Any, cast

from django.contrib.auth.models import User
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from agentdesk.json_input import json_object_parse
from reviews import selectors, services
from reviews.models import ApprovalRequest
from runs.api import api_error, token_required

LIST_LIMIT = 100


def request_json(request: ApprovalRequest, *, full: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": request.pk,
        "kind": request.kind,
        "state": request.state,
        "outcome": request.outcome,
        "queue": request.queue.slug,
        "run": str(request.run_id),
        "agent": request.agent_name,
        "tool": request.tool,
        "risk": request.risk,
        "arguments": request.arguments,
        "args_hash": request.args_hash,
        "rule": request.rule,
        "approvals_required": request.approvals_required,
        "due_at": request.due_at.isoformat(),
    }
    if full:
        body |= {
            "routing_reason": request.routing_reason,
            "rationale": request.rationale,
            "confidence": request.confidence,
            "context": request.context,
            "feedback": request.feedback,
        }
    return body


@require_GET
@token_required
def requests_list(request: HttpRequest) -> JsonResponse:
    queue_ids = selectors.queue_ids_visible(user=request.user)
    pending = selectors.inbox_requests(queue_ids=queue_ids, filters=selectors.InboxFilters())
    return JsonResponse({"requests": [request_json(r) for r in pending[:LIST_LIMIT]]})


@require_GET
@token_required
def requests_detail(request: HttpRequest, request_id: int) -> JsonResponse:
    approval = selectors.request_get_visible(user=request.user, request_id=request_id)
    if approval is None:
        return api_error(404, "no such request")
    return JsonResponse(request_json(approval, full=True))


@require_POST
@token_required
def requests_decide(request: HttpRequest, request_id: int) -> JsonResponse:
    approval = selectors.request_get_visible(user=request.user, request_id=request_id)
    if approval is None:
        return api_error(404, "no such request")
    if not selectors.can_decide(user=request.user, request=approval):
        return api_error(403, "this token's user may see this request but not decide it")
    try:
        body = json_object_parse(request.body)
    except ValueError as exc:
        return api_error(400, str(exc))
    user = cast(User, request.user)
    kind = body.get("decision")
    try:
        if kind == "approve":
            outcome = services.approval_approve(
                request_id=request_id,
                user=user,
                seen_hash=str(body.get("args_hash", "")),
                reason=str(body.get("reason", "")),
            )
        elif kind == "edit":
            arguments = body.get("arguments")
            if not isinstance(arguments, dict):
                return api_error(400, "'arguments' must be a JSON object")
            outcome = services.approval_edit(
                request_id=request_id,
                user=user,
                seen_hash=str(body.get("args_hash", "")),
                arguments=arguments,
                reason=str(body.get("reason", "")),
            )
        elif kind == "reject":
            outcome = services.approval_reject(
                request_id=request_id, user=user, feedback=str(body.get("feedback", ""))
            )
        else:
            return api_error(400, "'decision' must be one of: approve, edit, reject")
    except services.AlreadyDecided as exc:
        return api_error(409, exc.message, request_json(exc.request))
    except services.DutyRefused as exc:
        return api_error(403, exc.message)
    except services.DecisionRefused as exc:
        return api_error(400, exc.message, exc.field_errors or None)
    return JsonResponse({"completed": outcome.completed, "request": request_json(outcome.request)})
