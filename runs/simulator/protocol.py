"""The OpenAI Chat Completions wire format, as much of it as the simulator speaks.

Requests are validated the way the real API validates them (a 400 with an OpenAI-shaped
error body), including the rule that every tool call is answered by a tool message before
the conversation goes on: a runtime bug there should fail against the simulator exactly as
it would fail in production. Responses carry every field the official SDK parses.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
TOOL_CHOICE_MODES = frozenset({"none", "auto", "required"})
_TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class RequestError(Exception):
    """The request is invalid; becomes a 400 ``invalid_request_error``."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True)
class ChatRequest:
    """The parts of a chat completion request the simulator uses."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    tool_choice: Any
    parallel_tool_calls: bool


@dataclass(frozen=True)
class Reply:
    """The assistant message about to be sent: content, refusal and raw tool calls.

    Tool calls are (name, arguments text) pairs: the text is what goes on the wire, so a
    fault can make it invalid JSON.
    """

    content: str | None = None
    refusal: str | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Decode and validate a chat completion request body, or raise RequestError."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise RequestError(f"We could not parse the JSON body of your request: {exc}") from exc
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    if body.get("stream"):
        raise RequestError(
            "stream=true is not supported by the simulator.", param="stream", code="unsupported"
        )
    if body.get("n", 1) != 1:
        raise RequestError("Only n=1 is supported by the simulator.", param="n")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("you must provide a model parameter", param="model")
    messages = _check_messages(body.get("messages"))
    tools = _check_tools(body.get("tools"))
    tool_choice = _check_tool_choice(body.get("tool_choice"), tools)
    parallel = body.get("parallel_tool_calls", True)
    return ChatRequest(model, messages, tools, tool_choice, parallel is not False)


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty array.", param="messages")
    pending: set[str] = set()
    for index, message in enumerate(messages):
        param = f"messages.[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise RequestError(f"Invalid value for '{param}.role'.", param=f"{param}.role")
        role = message["role"]
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in pending:
                raise RequestError(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceding message with 'tool_calls'.",
                    param=f"{param}.role",
                )
            pending.discard(call_id)
            continue
        _check_answered(pending, param)
        if role == "assistant":
            pending = _tool_call_ids(message, param)
    _check_answered(pending, "messages")
    return messages


def _tool_call_ids(message: dict[str, Any], param: str) -> set[str]:
    ids: set[str] = set()
    for position, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise RequestError(
                f"Invalid tool call at '{param}.tool_calls.[{position}]'.",
                param=f"{param}.tool_calls",
            )
        ids.add(call["id"])
    return ids


def _check_answered(pending: set[str], param: str) -> None:
    if pending:
        raise RequestError(
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {', '.join(sorted(pending))}",
            param=param,
        )


def _check_tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise RequestError("'tools' must be an array.", param="tools")
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not _TOOL_NAME_RE.match(name):
            raise RequestError(
                f"Invalid 'tools[{index}].function.name': must match ^[a-zA-Z0-9_-]{{1,64}}$.",
                param=f"tools[{index}].function.name",
            )
    return tools


def _check_tool_choice(tool_choice: Any, tools: list[dict[str, Any]]) -> Any:
    if tool_choice is None:
        return "auto" if tools else "none"
    if tool_choice != "none" and not tools:
        raise RequestError(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            param="tool_choice",
        )
    if isinstance(tool_choice, str) and tool_choice in TOOL_CHOICE_MODES:
        return tool_choice
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        if name in {t["function"]["name"] for t in tools}:
            return tool_choice
        raise RequestError(
            f"Invalid value for 'tool_choice': no function named '{name}' was specified in the "
            "'tools' parameter.",
            param="tool_choice",
        )
    raise RequestError(
        "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or a function.",
        param="tool_choice",
    )


def canonical_json(value: Any) -> str:
    """Key-sorted, compact JSON: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def conversation_digest(request: ChatRequest) -> str:
    """sha256 of (model, messages, tool names): the identity of a conversation state."""
    names = [t["function"]["name"] for t in request.tools]
    material = canonical_json([request.model, request.messages, names])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def estimate_tokens(text: str) -> int:
    """About four characters per token; deterministic and never zero."""
    return max(1, math.ceil(len(text) / 4))


def _short_hash(text: str, length: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def completion_body(
    request: ChatRequest, reply: Reply, seed_material: str, attempt: int
) -> dict[str, Any]:
    """A ``chat.completion`` object as the real API returns it.

    Ids are derived from the seed material, so a replayed conversation gets the same tool
    call ids (and so the same next conversation state).
    """
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.content,
        "refusal": reply.refusal,
        "annotations": [],
    }
    if reply.calls:
        message["tool_calls"] = [
            {
                "id": "call_" + _short_hash(f"{seed_material}:call:{index}", 24),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            for index, (name, arguments) in enumerate(reply.calls)
        ]
    prompt_tokens = estimate_tokens(canonical_json([request.messages, request.tools]))
    completion_text = (reply.content or "") + (reply.refusal or "")
    completion_text += "".join(name + arguments for name, arguments in reply.calls)
    completion_tokens = estimate_tokens(completion_text)
    return {
        "id": "chatcmpl-" + _short_hash(f"{seed_material}:attempt:{attempt}", 29),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "system_fingerprint": "fp_agentdesk_sim",
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if reply.calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def error_body(
    message: str, error_type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """An OpenAI-shaped error: the SDK reads ``error.message`` into the exception."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}
