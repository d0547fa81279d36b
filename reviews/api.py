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

from typing import Any, Literal, cast

from django.contrib.auth.models import User
from django.http import HttpRequest, JsonResponse
from ninja import Router, Schema

from agentdesk.api import api_error, body_documented, refusals
from agentdesk.json_input import json_object_parse
from reviews import selectors, services
from reviews.models import ApprovalRequest, RequestKind, RequestOutcome, RequestState

LIST_LIMIT = 100

router = Router(tags=["requests"])


class DecisionIn(Schema):
    decision: Literal["approve", "edit", "reject"]
    # approve and edit: the hash of the arguments the reviewer saw (they may have changed).
    args_hash: str = ""
    # edit: the arguments to run instead, checked against the tool's input schema.
    arguments: dict[str, Any] | None = None
    # reject: returned to the agent as the tool's result.
    feedback: str = ""
    reason: str = ""


class RequestOut(Schema):
    id: int
    kind: RequestKind
    state: RequestState
    outcome: RequestOutcome | Literal[""]
    queue: str
    run: str
    agent: str
    tool: str
    risk: str
    arguments: dict[str, Any]
    args_hash: str
    rule: str
    approvals_required: int
    due_at: str


class RequestFullOut(RequestOut):
    routing_reason: str
    rationale: str
    confidence: float | None
    context: dict[str, Any]
    feedback: str


class RequestListOut(Schema):
    requests: list[RequestOut]


class DecisionOut(Schema):
    # False: a two-person request that has its first approval and waits for a second.
    completed: bool
    request: RequestOut


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


@router.get(
    "/requests",
    response={200: RequestListOut, **refusals()},
    url_name="api-requests",
    summary="Pending requests the token's user may see, due first",
)
def requests_list(request: HttpRequest) -> dict[str, Any]:
    queue_ids = selectors.queue_ids_visible(user=request.user)
    pending = selectors.inbox_requests(queue_ids=queue_ids, filters=selectors.InboxFilters())
    return {"requests": [request_json(r) for r in pending[:LIST_LIMIT]]}


@router.get(
    "/requests/{int:request_id}",
    response={200: RequestFullOut, **refusals(404)},
    url_name="api-request",
    summary="One request: the call, its arguments and hash, the context",
)
def requests_detail(request: HttpRequest, request_id: int) -> dict[str, Any] | JsonResponse:
    approval = selectors.request_get_visible(user=request.user, request_id=request_id)
    if approval is None:
        return api_error(404, "no such request")
    return request_json(approval, full=True)


@router.post(
    "/requests/{int:request_id}/decision",
    response={200: DecisionOut, **refusals(400, 403, 404, 409)},
    url_name="api-request-decide",
    openapi_extra=body_documented(DecisionIn),
    summary="Approve, edit or reject a request (409 if someone decided it first)",
)
def requests_decide(request: HttpRequest, request_id: int) -> dict[str, Any] | JsonResponse:
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
    return {"completed": outcome.completed, "request": request_json(outcome.request)}
