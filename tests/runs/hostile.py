"""A hostile model endpoint that echoes the caller's API key, and an agent to run against it.

The endpoint is a real OpenAI-compatible HTTP server on loopback: the key reaches it the way
it reaches any endpoint, from ``AGENTDESK_LLM_ENDPOINTS`` through the ``openai`` SDK's
``Authorization: Bearer`` header, and it puts that key back where the runtime stores what an
endpoint says: in its error bodies (as a provider that quotes the header it refused does),
in its answers, in the arguments, rationale, id and name of the tool calls it proposes, and
in the model name it reports.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel, ConfigDict

from agents.definition import Idempotency, Risk, Tool, ToolContext, ToolError
from examples.support.agent import support_agent
from policy.engine import Policy

# A configured key in no format the redactor knows by its shape: only its literal value,
# read from the settings, can find it.
CANARY_KEY = "canary-7Qm2Zx9Lp4"

# (status, body) for the key the request carried and the request's JSON.
Reply = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]


def echo_auth_error(key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """401, quoting the header it refused: what put the key into ``Run.error``."""
    return 401, {
        "error": {
            "message": f"Invalid credentials in header 'Authorization: Bearer {key}'",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


def tool_call(name: str, arguments: dict[str, Any] | str, *, call_id: str = "call_1") -> Reply:
    """A reply proposing one call; ``{key}`` in any string becomes the caller's key.

    ``arguments`` as a string: sent as it is, JSON or not.
    """
    return tool_calls((name, arguments, call_id))


def tool_calls(*calls: tuple[str, dict[str, Any] | str, str]) -> Reply:
    """A reply proposing several calls at once: (name, arguments, call id) each."""

    def reply(key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        proposed = []
        for name, arguments, call_id in calls:
            raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
            proposed.append(
                {
                    "id": call_id.replace("{key}", key),
                    "type": "function",
                    "function": {
                        "name": name.replace("{key}", key),
                        "arguments": raw.replace("{key}", key),
                    },
                }
            )
        message = {"role": "assistant", "content": None, "tool_calls": proposed}
        return 200, _completion(body, message, "tool_calls", key)

    return reply


def answer(text: str) -> Reply:
    def reply(key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        message = {"role": "assistant", "content": text.replace("{key}", key)}
        return 200, _completion(body, message, "stop", key)

    return reply


def refusal(text: str) -> Reply:
    def reply(key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        message = {"role": "assistant", "content": None, "refusal": text.replace("{key}", key)}
        return 200, _completion(body, message, "stop", key)

    return reply


def _completion(
    body: dict[str, Any], message: dict[str, Any], finish: str, key: str
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-hostile",
        "object": "chat.completion",
        "created": 0,
        "model": f"{body.get('model', 'm')}-{key}",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


class HostileEndpoint:
    """The server; ``script(...)`` the replies of the next requests, then 401 echoes."""

    def __init__(self) -> None:
        self._replies: list[Reply] = []
        self.keys_seen: list[str] = []
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                status, reply = endpoint._next(key)(key, request)
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._replies = list(replies)

    def _next(self, key: str) -> Reply:
        with self._lock:
            self.keys_seen.append(key)
            return self._replies.pop(0) if self._replies else echo_auth_error

    def __enter__(self) -> HostileEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- the agent: tools that give back what they are given ----------------------------------


class _NoteArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


def _read_note(args: _NoteArgs, ctx: ToolContext) -> dict[str, Any]:
    return {"note": args.text, "found": True}


def _refuse_note(args: _NoteArgs, ctx: ToolContext) -> dict[str, Any]:
    raise ToolError("no_such_note", f"there is no note {args.text}", looked_for=args.text)


def _file_note(args: _NoteArgs, ctx: ToolContext) -> dict[str, Any]:
    return {"filed": args.text}


def _records(tool: str, arguments: dict[str, Any], run_input: Any) -> dict[str, Any]:
    """What a reviewer is shown beside the call: here, the record the call names."""
    return {"note": {"text": arguments.get("text", ""), "owner": "jane@example.com"}}


ECHO_TOOLS = (
    Tool(
        name="read_note",
        description="Read a note.",
        func=_read_note,
        input_schema=_NoteArgs,
        risk=Risk.READ,
        idempotency=Idempotency.SAFE,
    ),
    Tool(
        name="refuse_note",
        description="Read a note that is not there.",
        func=_refuse_note,
        input_schema=_NoteArgs,
        risk=Risk.READ,
        idempotency=Idempotency.SAFE,
    ),
    Tool(
        name="file_note",
        description="File a note (a person reviews it).",
        func=_file_note,
        input_schema=_NoteArgs,
        risk=Risk.IRREVERSIBLE,
        idempotency=Idempotency.KEYED,
    ),
)

# The support agent's prompt and input, these tools, one model, no rule-based fallback; an
# irreversible call goes to the default queue.
echoing = replace(
    support_agent,
    name="echoing",
    tools=ECHO_TOOLS,
    fallback_models=(),
    model_tiers={},
    task_kinds=("default",),
    task_kind=None,
    rule_fallback=None,
    escalate_to_human=True,
    policy=Policy(review_risks=frozenset({Risk.IRREVERSIBLE})),
    review_context=_records,
    # The support agent's checks are of its own tools, which these are not.
    verifiers=(),
    subject=None,
    policy_facts=None,
)
# The same, without a human: an exhausted chain dead-letters the run.
echoing_bare = replace(echoing, name="echoing_bare", escalate_to_human=False)
