"""The simulator's HTTP server: stdlib only, one daemon thread per connection.

``ThreadingHTTPServer`` with HTTP/1.1 keep-alive is plenty for loopback benchmarks: a
connection's thread spends nearly all its time sleeping in simulated latency, so hundreds
of concurrent requests cost hundreds of idle threads and nothing else. Sleeps (latency and
hangs) wait on the server's stop event, so shutting down never waits for them.

Use ``Simulator`` in-process (tests, benchmarks)::

    with Simulator(SimulatorConfig(seed=7)) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0)

or ``serve`` for a foreground process (``python -m runs.simulator``).
"""

from __future__ import annotations

import json
import math
import signal
import socketserver
import sys
import threading
import traceback
from collections import Counter, OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import runs.simulator.faults as faults
import runs.simulator.judge as judge
from runs.simulator.brain import Decision, decide, tool_schemas, with_false_claim
from runs.simulator.config import ConfigError, SimulatorConfig
from runs.simulator.faults import Fault
from runs.simulator.protocol import (
    ChatRequest,
    Reply,
    RequestError,
    completion_body,
    conversation_digest,
    error_body,
    parse_chat_request,
)

MAX_BODY_BYTES = 16 * 1024 * 1024
# Attempt counters kept per conversation state; the oldest are forgotten beyond this.
MAX_TRACKED_CONVERSATIONS = 200_000
MODELS = ("sim-small", "sim-large")
CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
MODELS_PATHS = frozenset({"/v1/models", "/models"})


class SimulatorState:
    """Config, attempt counters and stats, shared by all handler threads under one lock."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._attempts: OrderedDict[str, int] = OrderedDict()
        self._outcomes: Counter[str] = Counter()
        self._in_flight = 0
        self._max_in_flight = 0
        self.stopping = threading.Event()

    @property
    def config(self) -> SimulatorConfig:
        """The current config (an immutable snapshot)."""
        return self._config

    def update_config(self, changes: dict[str, Any]) -> SimulatorConfig:
        """Validate and apply a partial update; raises ConfigError and changes nothing."""
        with self._lock:
            self._config = self._config.updated(changes)
            return self._config

    def next_attempt(self, digest: str) -> int:
        """0 for the first request of a conversation state, then 1, 2, ..."""
        with self._lock:
            attempt = self._attempts.pop(digest, -1) + 1
            self._attempts[digest] = attempt
            if len(self._attempts) > MAX_TRACKED_CONVERSATIONS:
                self._attempts.popitem(last=False)
            return attempt

    def record(self, outcome: str) -> None:
        """Count one finished request under its outcome."""
        with self._lock:
            self._outcomes[outcome] += 1

    def enter(self) -> None:
        """A chat request started."""
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def leave(self) -> None:
        """A chat request finished (answered, failed or hung up)."""
        with self._lock:
            self._in_flight -= 1

    def stats(self) -> dict[str, Any]:
        """What ``GET /_sim/stats`` shows."""
        with self._lock:
            return {
                "requests": sum(self._outcomes.values()),
                "outcomes": dict(sorted(self._outcomes.items())),
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "conversations": len(self._attempts),
            }

    def reset(self) -> None:
        """Forget stats and attempt counters (``POST /_sim/reset``); the config stays."""
        with self._lock:
            self._attempts.clear()
            self._outcomes.clear()
            self._max_in_flight = self._in_flight


class SimulatorHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer tuned for many concurrent keep-alive connections."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], state: SimulatorState, log_requests: bool = False
    ) -> None:
        self.state = state
        self.log_requests = log_requests
        super().__init__(address, SimulatorHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS lookup that can stall.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts in tests, killed benchmarks) are not errors.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class SimulatorHandler(BaseHTTPRequestHandler):
    """Routes requests; the chat endpoint applies faults, latency, then the brain."""

    protocol_version = "HTTP/1.1"
    server_version = "agentdesk-simulator/1"
    # An idle keep-alive connection gives its thread back after this many seconds.
    timeout = 300
    server: SimulatorHTTPServer

    def do_GET(self) -> None:
        """Health, models, config and stats."""
        path = self.path.split("?", 1)[0]
        state = self.server.state
        if path == "/healthz":
            self._send_json(200, {"status": "ok"})
        elif path in MODELS_PATHS:
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "sim"} for m in MODELS]
            self._send_json(200, {"object": "list", "data": data})
        elif path == "/_sim/config":
            self._send_json(200, state.config.as_dict())
        elif path == "/_sim/stats":
            self._send_json(200, state.stats())
        else:
            self._not_found(path)

    def do_POST(self) -> None:
        """Chat completions and the control endpoints."""
        path = self.path.split("?", 1)[0]
        body = self._read_body()
        if body is None:
            return
        if path in CHAT_PATHS:
            self._chat(body)
        elif path == "/_sim/config":
            self._update_config(body)
        elif path == "/_sim/reset":
            self.server.state.reset()
            self._send_json(200, self.server.state.stats())
        else:
            self._not_found(path)

    # --- chat -------------------------------------------------------------------------------

    def _chat(self, body: bytes) -> None:
        state = self.server.state
        state.enter()
        try:
            outcome = self._chat_outcome(body)
        except Exception:  # a simulator bug must look like a server error, not a hang
            traceback.print_exc()
            outcome = "internal_error"
            self._send_error(500, "The simulator crashed; see its stderr.", "server_error")
        finally:
            state.leave()
        state.record(outcome)

    def _chat_outcome(self, body: bytes) -> str:
        """Answer one chat request; return the outcome name for the stats."""
        state = self.server.state
        config = state.config
        try:
            request = parse_chat_request(body)
        except RequestError as exc:
            self._send_error(400, exc.message, "invalid_request_error", exc.code, exc.param)
            return "bad_request"
        seed_material = f"{config.seed}:{conversation_digest(request)}"
        attempt = state.next_attempt(seed_material)
        rng = faults.fault_rng(seed_material, attempt)
        fault = faults.draw_fault(rng, config)
        if fault is Fault.HANG:
            state.stopping.wait(config.hang_s)
            self.close_connection = True  # hang up without a word
            return "hang"
        state.stopping.wait(faults.draw_latency_s(rng, config))
        if fault is Fault.RATE_LIMIT:
            self._send_rate_limited(config.retry_after_s)
            return "rate_limited"
        if fault is Fault.SERVER_ERROR:
            status = faults.server_error_status(rng)
            message, code = faults.SERVER_ERRORS[status]
            self._send_error(status, message, "server_error", code)
            return f"server_error_{status}"
        reply, outcome = self._reply(request, seed_material, config, fault, rng)
        self._send_json(200, completion_body(request, reply, seed_material, attempt))
        return outcome

    def _reply(
        self,
        request: ChatRequest,
        seed_material: str,
        config: SimulatorConfig,
        fault: Fault | None,
        rng: Any,
    ) -> tuple[Reply, str]:
        """The brain's (or the judge's) reply, corrupted if an output fault was drawn."""
        judged = None if request.tools else judge.parse_judge_request(request.messages)
        if judged is not None:
            rubric, answer = judged
            judgement = judge.judge(
                rubric, answer, seed=config.seed, noise_rate=config.judge_noise_rate
            )
            reply = Reply(content=judgement.as_content())
        else:
            reply = self._agent_reply(request, seed_material, config, fault)
        if fault is None or (fault in faults.CALL_FAULTS and not reply.calls):
            return reply, "tool_calls" if reply.calls else "stop"
        return faults.corrupt(fault, reply, tool_schemas(request.tools), rng), str(fault)

    def _agent_reply(
        self,
        request: ChatRequest,
        seed_material: str,
        config: SimulatorConfig,
        fault: Fault | None,
    ) -> Reply:
        """The support agent's next reply (a forced tool call if a call fault was drawn)."""
        parallel = config.parallel_tool_calls and request.parallel_tool_calls
        tool_choice = request.tool_choice
        if fault in faults.CALL_FAULTS and request.tools and tool_choice != "none":
            tool_choice = "required"  # the fault needs a tool call to corrupt
        decision = decide(
            request.messages,
            request.tools,
            seed_material,
            config.mistake_rate,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel,
        )
        if decision.content and not decision.tool_calls:
            decision = with_false_claim(decision, seed_material, config.false_claim_rate)
        return _to_reply(decision)

    # --- control ----------------------------------------------------------------------------

    def _update_config(self, body: bytes) -> None:
        try:
            changes = json.loads(body or b"{}")
            if not isinstance(changes, dict):
                raise ConfigError("the body must be a JSON object of knob: value")
            config = self.server.state.update_config(changes)
        except (ValueError, ConfigError) as exc:
            self._send_error(400, str(exc), "invalid_request_error", "invalid_config")
            return
        self._send_json(200, config.as_dict())

    # --- plumbing ---------------------------------------------------------------------------

    def _read_body(self) -> bytes | None:
        """The request body; on a bad length, answer 400/413, drop the connection, None."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            status = 413 if length > MAX_BODY_BYTES else 400
            self._send_error(status, "Invalid Content-Length.", "invalid_request_error")
            return None
        return self.rfile.read(length) if length else b""

    def _send_rate_limited(self, retry_after_s: float) -> None:
        message = (
            f"Rate limit reached for requests (simulated). Please try again in {retry_after_s:g}s."
        )
        headers = {
            # Retry-After is whole seconds (rounded up); retry-after-ms, which the openai
            # SDK prefers, keeps the exact value.
            "Retry-After": str(math.ceil(retry_after_s)),
            "retry-after-ms": str(round(retry_after_s * 1000)),
            "x-ratelimit-remaining-requests": "0",
        }
        self._send_json(429, error_body(message, "requests", "rate_limit_exceeded"), headers)

    def _send_error(
        self,
        status: int,
        message: str,
        error_type: str,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        self._send_json(status, error_body(message, error_type, code, param))

    def _not_found(self, path: str) -> None:
        self._send_error(404, f"Unknown path {path!r}.", "invalid_request_error", "not_found")

    def _send_json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet unless ``--log-requests``: 250 clients would drown stderr."""
        if self.server.log_requests:
            super().log_message(format, *args)


def _to_reply(decision: Decision) -> Reply:
    calls = [
        (call.name, json.dumps(call.arguments, ensure_ascii=False)) for call in decision.tool_calls
    ]
    return Reply(content=decision.content, refusal=None, calls=calls)


class Simulator:
    """A simulator server running in a background thread, for tests and benchmarks."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_requests: bool = False,
    ) -> None:
        self.state = SimulatorState(config or SimulatorConfig())
        self.server = SimulatorHTTPServer((host, port), self.state, log_requests)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def root_url(self) -> str:
        """``http://host:port`` (control endpoints live under it)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The ``base_url`` for the openai SDK."""
        return f"{self.root_url}/v1"

    def start(self) -> Simulator:
        """Serve in a daemon thread; returns self."""
        # A short poll interval makes stop() quick; the cost is an idle wake-up per 50 ms.
        self._thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="simulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and wake every sleeping handler; idempotent."""
        self.state.stopping.set()
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join()
            self._thread = None
        self.server.server_close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    config: SimulatorConfig, *, host: str = "127.0.0.1", port: int = 0, log_requests: bool = False
) -> None:
    """Run in the foreground until SIGTERM or SIGINT, announcing the URL on stdout."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    simulator = Simulator(config, host=host, port=port, log_requests=log_requests).start()
    print(f"simulator listening on {simulator.base_url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        simulator.stop()
        print("simulator stopped", file=sys.stderr, flush=True)
