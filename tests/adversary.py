"""A hostile OpenAI-compatible model on loopback: it plays a script, whatever it is told.

It picks other customers' ids, splits amounts and claims 0.99 confidence: each reply is
the next entry of its script, chosen by how many assistant turns the conversation already
holds, so a run resumed after a review gets the next one. Requests go through the real
``openai`` SDK to a real HTTP server; only the model's judgement is replaced.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Call = tuple[str, Mapping[str, Any]]  # a tool's name and its arguments
Turn = Sequence[Call] | str  # tool calls, or a final answer


@dataclass
class Adversary:
    script: list[Turn] = field(default_factory=list)
    confidence: float = 0.99
    requests: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> Adversary:
        adversary = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                adversary.requests.append(body)
                reply = json.dumps(adversary.reply(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def reply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        turn_index = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
        turn: Turn = (
            self.script[turn_index] if turn_index < len(self.script) else "Done. Nothing else."
        )
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if isinstance(turn, str):
            message["content"] = turn
            finish = "stop"
        else:
            message["tool_calls"] = [
                {
                    "id": f"call_{turn_index}_{i}",
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": json.dumps(
                            {
                                **arguments,
                                "rationale": "The customer asked for it.",
                                "confidence": self.confidence,
                            }
                        ),
                    },
                }
                for i, (name, arguments) in enumerate(turn)
            ]
            finish = "tool_calls"
        return {
            "id": f"chatcmpl-adversary-{len(self.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "adversary"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }
