"""The model gateway: every model call goes through the official openai SDK.

Any OpenAI-compatible endpoint works (OpenAI, vLLM, Ollama, the bundled simulator): the
base URL and key come from settings. The SDK's own retries are off (``max_retries=0``):
retrying is the runtime's decision, recorded step by step. SDK exceptions are translated
into the error taxonomy here, so nothing above this module knows about HTTP.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

import httpx2
import openai
import pydantic
from django.conf import settings

from agentdesk.errors import ErrorClass


@dataclass(frozen=True)
class ProposedCall:
    id: str
    name: str
    raw_arguments: str


@dataclass(frozen=True)
class ModelReply:
    content: str
    refusal: str | None
    tool_calls: tuple[ProposedCall, ...]
    finish_reason: str
    model: str
    tokens_in: int
    tokens_out: int
    latency_ms: int

    def assistant_message(self) -> dict[str, Any]:
        """The reply as it goes back into the conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.raw_arguments},
                }
                for call in self.tool_calls
            ]
        return message


class ModelCallFailed(Exception):
    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        latency_ms: int,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.latency_ms = latency_ms
        self.retry_after_s = retry_after_s


class _Function(pydantic.BaseModel):
    name: str
    arguments: str  # a JSON string, per the API; parsed (and repaired) by the model step


class _ToolCall(pydantic.BaseModel):
    id: str
    type: str
    function: _Function | None = None  # absent from calls of other types ("custom")


class _Message(pydantic.BaseModel):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(pydantic.BaseModel):
    message: _Message
    finish_reason: str | None = None


class _Usage(pydantic.BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Completion(pydantic.BaseModel):
    """The fields of a Chat Completions reply this gateway reads, validated.

    Rather than the SDK's ``ChatCompletion``, which the SDK builds without validating
    (``construct_type``, pure Python, about 0.1 ms a reply and 3 % of a worker's CPU):
    validating these few fields takes pydantic-core a few microseconds, and a reply
    whose shape is wrong (a tool call without an id, arguments that are not a string)
    becomes ``model_output_invalid`` here instead of an AttributeError or a TypeError
    further on. Fields not read are ignored, as OpenAI-compatible servers differ in them.
    """

    model: str | None = None
    choices: list[_Choice] = []
    usage: _Usage | None = None


_clients = threading.local()


@cache
def _tls() -> ssl.SSLContext:
    # Loaded once per process: each client would otherwise load the certificate store
    # into a context of its own, about 0.9 MB apiece (150 clients: 131 MB against 1.5).
    # The same context the SDK's client makes by default; sharing one is safe across threads.
    return httpx2.create_ssl_context()


def _client(base_url: str, api_key: str) -> openai.OpenAI:
    """This thread's client for the endpoint, made on its first call and kept.

    One client per thread, not per process: each client owns a connection pool, and the
    SDK's pool walks every connection it holds (a readability check on each idle socket)
    to place each request. Shared by a worker's 150 step threads, that walk was about 7 %
    of the worker's CPU (docs/benchmarks.md); a thread's own pool holds the one connection
    its one call at a time needs, kept alive between calls.
    """
    by_endpoint: dict[tuple[str, str], openai.OpenAI] = _clients.__dict__.setdefault(
        "by_endpoint", {}
    )
    client = by_endpoint.get((base_url, api_key))
    if client is None:
        client = by_endpoint[base_url, api_key] = openai.OpenAI(
            base_url=base_url,
            api_key=api_key,
            max_retries=0,
            # The SDK's own defaults (timeout, limits, redirects), with the shared context.
            http_client=openai.DefaultHttpxClient(verify=_tls()),
        )
    return client


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _classify(exc: Exception) -> tuple[ErrorClass, float | None]:
    match exc:
        case openai.APITimeoutError():
            return ErrorClass.MODEL_TIMEOUT, None
        case openai.APIConnectionError():
            return ErrorClass.MODEL_CONNECTION_ERROR, None
        case openai.RateLimitError():
            return ErrorClass.MODEL_RATE_LIMITED, _retry_after(exc)
        case openai.AuthenticationError() | openai.PermissionDeniedError():
            return ErrorClass.MODEL_AUTH_FAILED, None
        case openai.InternalServerError():
            return ErrorClass.MODEL_SERVER_ERROR, None
        case openai.APIStatusError() if exc.status_code >= 500:
            return ErrorClass.MODEL_SERVER_ERROR, None
        case openai.APIStatusError():
            return ErrorClass.MODEL_REQUEST_INVALID, None
        case _:
            return ErrorClass.MODEL_OUTPUT_INVALID, None


def _message(exc: Exception) -> str:
    """What the step records of a failed call; a reply of the wrong shape, field by field."""
    if not isinstance(exc, pydantic.ValidationError):
        return str(exc)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'the reply'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)[:5]
    )
    return f"the reply is not a chat completion: {problems}"


def _request_body(
    model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> dict[str, Any]:
    """The Chat Completions request, sent as it is.

    Through ``client.post`` rather than ``client.chat.completions.create``: ``create``
    first walks every message and tool schema against the SDK's TypedDicts
    (``maybe_transform``), about 5 ms of CPU per call with the example agent, the largest
    single cost of a model step, to produce exactly this JSON, which the conversation
    already is (it is stored in wire form). The SDK still does the rest: its HTTP client
    and connection pool, headers and auth, its exception classes, which ``_classify``
    reads, and decoding the reply's JSON; ``_Completion`` reads the fields used here.
    An agent without tools must not send tool_choice: the API refuses it.
    """
    body: dict[str, Any] = {"model": model, "messages": messages}
    if tools:
        body["tools"] = tools
        body["tool_choice"] = "auto"
    return body


def model_complete(
    *,
    model: str,
    endpoint: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    timeout_s: float | None = None,
) -> ModelReply:
    """One Chat Completions call; raises ModelCallFailed with a classified error.

    ``endpoint`` is an alias from AGENTDESK_LLM_ENDPOINTS; its URL and key never leave
    the settings.
    """
    config = settings.AGENTDESK_LLM_ENDPOINTS[endpoint]
    client = _client(config["base_url"], config["api_key"])
    started = time.perf_counter()
    try:
        completion = _Completion.model_validate(
            client.post(
                "/chat/completions",
                body=_request_body(model, messages, tools),
                cast_to=object,  # the decoded JSON, as it came
                options={"timeout": timeout_s or settings.AGENTDESK_LLM_TIMEOUT_S},
            )
        )
    except (openai.OpenAIError, ValueError) as exc:  # pydantic's ValidationError included
        latency_ms = round((time.perf_counter() - started) * 1000)
        error_class, retry_after = _classify(exc)
        raise ModelCallFailed(
            error_class, _message(exc), latency_ms=latency_ms, retry_after_s=retry_after
        ) from exc
    latency_ms = round((time.perf_counter() - started) * 1000)
    if not completion.choices:
        raise ModelCallFailed(
            ErrorClass.MODEL_OUTPUT_INVALID, "the model returned no choices", latency_ms=latency_ms
        )
    choice = completion.choices[0]
    message = choice.message
    calls = tuple(
        ProposedCall(id=call.id, name=call.function.name, raw_arguments=call.function.arguments)
        for call in (message.tool_calls or [])
        if call.type == "function" and call.function is not None
    )
    usage = completion.usage
    return ModelReply(
        content=message.content or "",
        refusal=message.refusal,
        tool_calls=calls,
        finish_reason=choice.finish_reason or "",
        model=completion.model or model,
        tokens_in=usage.prompt_tokens if usage else 0,
        tokens_out=usage.completion_tokens if usage else 0,
        latency_ms=latency_ms,
    )
