"""The one error taxonomy. Every failed step, action and run names one of these classes.

docs/errors.md explains each class, where it comes from and what the runtime does next.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from agentdesk.redaction import redact_text, redact_value


class ErrorClass(StrEnum):
    MODEL_TIMEOUT = "model_timeout"
    MODEL_RATE_LIMITED = "model_rate_limited"
    MODEL_SERVER_ERROR = "model_server_error"
    MODEL_CONNECTION_ERROR = "model_connection_error"
    MODEL_REQUEST_INVALID = "model_request_invalid"
    MODEL_AUTH_FAILED = "model_auth_failed"
    MODEL_REFUSAL = "model_refusal"
    MODEL_OUTPUT_INVALID = "model_output_invalid"
    TOOL_UNKNOWN = "tool_unknown"
    TOOL_ARGS_INVALID = "tool_args_invalid"
    TOOL_ERROR = "tool_error"
    TOOL_TIMEOUT = "tool_timeout"
    TOOL_CRASHED = "tool_crashed"
    POLICY_BLOCKED = "policy_blocked"
    REVIEW_REJECTED = "review_rejected"
    BUDGET_EXCEEDED = "budget_exceeded"
    CIRCUIT_OPEN = "circuit_open"
    VERIFICATION_FAILED = "verification_failed"
    HANDOFF_FAILED = "handoff_failed"
    INTERNAL_ERROR = "internal_error"


def error_payload(error_class: ErrorClass, message: str, **details: Any) -> dict[str, Any]:
    """The structured error stored on records and returned to the model as a tool result.

    Redacted here, once, because an error's words come from outside: an endpoint that
    echoes the request's Authorization header, a tool's exception, the model's own
    arguments quoted back by a validation error. Every record an error reaches (a step, an
    action's result, the checkpoint, the run, a dead letter, an approval request) is
    built from this payload.
    """
    payload: dict[str, Any] = {"class": str(error_class), "message": redact_text(message)}
    if details:
        payload["details"] = redact_value(details)
    return payload
