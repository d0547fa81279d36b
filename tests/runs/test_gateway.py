"""The model gateway's clients and its reading of replies (the calls themselves: test_simulator)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agentdesk.errors import ErrorClass
from runs.gateway import client as gateway


def test_each_thread_keeps_one_client_per_endpoint():
    first = gateway._client("http://127.0.0.1:1/v1", "sk-a")
    assert gateway._client("http://127.0.0.1:1/v1", "sk-a") is first
    assert gateway._client("http://127.0.0.1:2/v1", "sk-a") is not first
    assert gateway._client("http://127.0.0.1:1/v1", "sk-b") is not first

    other: list[object] = []
    thread = threading.Thread(
        target=lambda: other.append(gateway._client("http://127.0.0.1:1/v1", "sk-a"))
    )
    thread.start()
    thread.join()
    assert other[0] is not first
    assert str(other[0].base_url) == str(first.base_url) == "http://127.0.0.1:1/v1/"


class _Endpoint:
    """An OpenAI-compatible endpoint on loopback that answers every request with one body."""

    def __init__(self, body: bytes, content_type: str = "application/json") -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Type", outer.content_type)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.body, self.content_type = body, content_type
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def answering(settings: Any) -> Iterator[Callable[..., None]]:
    """``answering(body)``: the endpoint ``odd`` now answers every call with ``body``."""
    endpoints: list[_Endpoint] = []

    def start(body: Any, content_type: str = "application/json") -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        endpoints.append(_Endpoint(raw, content_type))
        settings.AGENTDESK_LLM_ENDPOINTS = {
            "odd": {"base_url": endpoints[-1].base_url, "api_key": "sk-test"}
        }

    yield start
    for endpoint in endpoints:
        endpoint.close()


def _complete() -> gateway.ModelReply:
    return gateway.model_complete(
        model="gpt-4o-mini",
        endpoint="odd",
        messages=[{"role": "user", "content": "Where is my order?"}],
        tools=[],
        timeout_s=5,
    )


def _reply(message: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "finish_reason": "stop", "message": message}], **extra}


def test_a_lean_reply_from_another_server_is_read(answering: Callable[..., None]):
    # No id, created, object or usage, and fields this gateway does not know: still a reply.
    answering(_reply({"role": "assistant", "content": "Shipped.", "reasoning": "..."}, extra=1))
    reply = _complete()
    assert (reply.content, reply.refusal, reply.tool_calls) == ("Shipped.", None, ())
    assert (reply.model, reply.tokens_in, reply.tokens_out) == ("gpt-4o-mini", 0, 0)
    assert reply.finish_reason == "stop"


def test_tool_calls_of_other_types_are_left_out(answering: Callable[..., None]):
    function_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup_order", "arguments": '{"order_id": "SO-1002"}'},
    }
    custom_call = {"id": "call_2", "type": "custom", "custom": {"name": "x", "input": "y"}}
    answering(
        _reply(
            {"role": "assistant", "content": None, "tool_calls": [custom_call, function_call]},
            model="gpt-4o-mini-2024-07-18",
            usage={"prompt_tokens": 812, "completion_tokens": 31, "total_tokens": 843},
        )
    )
    reply = _complete()
    assert reply.tool_calls == (
        gateway.ProposedCall(
            id="call_1", name="lookup_order", raw_arguments='{"order_id": "SO-1002"}'
        ),
    )
    assert (reply.model, reply.tokens_in, reply.tokens_out) == ("gpt-4o-mini-2024-07-18", 812, 31)


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (
            _reply(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "lookup_order", "arguments": {"order_id": "1"}},
                        }
                    ],
                }
            ),
            "application/json",
            "the reply is not a chat completion: "
            "choices.0.message.tool_calls.0.function.arguments: Input should be a valid string",
        ),
        (
            _reply({"role": "assistant", "tool_calls": [{"type": "function"}]}),
            "application/json",
            "the reply is not a chat completion: choices.0.message.tool_calls.0.id: Field required",
        ),
        (
            [{"content": "a list, not an object"}],
            "application/json",
            "the reply is not a chat completion: "
            "the reply: Input should be a valid dictionary or instance of _Completion",
        ),
        (
            b"upstream says hello",
            "text/plain",
            "the reply is not a chat completion: "
            "the reply: Input should be a valid dictionary or instance of _Completion",
        ),
        ({"choices": []}, "application/json", "the model returned no choices"),
    ],
    ids=["arguments-not-a-string", "call-without-id", "json-list", "not-json", "no-choices"],
)
def test_a_reply_of_the_wrong_shape_is_model_output_invalid(
    answering: Callable[..., None], body: Any, content_type: str, says: str
):
    answering(body, content_type)
    with pytest.raises(gateway.ModelCallFailed) as failed:
        _complete()
    assert failed.value.error_class == ErrorClass.MODEL_OUTPUT_INVALID
    assert failed.value.message == says
    assert failed.value.retry_after_s is None
