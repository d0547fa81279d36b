"""A model call for the eval: the gateway's client, retries and breakers, in one place.

The eval asks a model outside a run (a step example's next reply, the judge's grade), so
it cannot schedule a retry as a run's step does; it waits the gateway's own backoff
(runs.gateway.retrying) in the eval's task instead, then tries the route's fallbacks in
order. Every attempt counts in the usage, so the eval's cost is what it spent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings

from agentdesk.errors import ErrorClass
from agents.definition import ModelRoute
from runs.gateway.breakers import (
    CircuitOpen,
    breaker_allow,
    breaker_record_failure,
    breaker_record_success,
    model_breaker_name,
)
from runs.gateway.client import ModelCallFailed, ModelReply, model_complete
from runs.gateway.pricing import model_call_cost
from runs.gateway.retrying import retry_delay


@dataclass
class ModelUsage:
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: int = 0
    cost_usd: Decimal = Decimal(0)
    calls: int = 0

    def add(self, other: ModelUsage) -> None:
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        self.latency_ms += other.latency_ms
        self.cost_usd += other.cost_usd
        self.calls += other.calls


def complete_on_routes(
    routes: Sequence[ModelRoute], messages: list[dict[str, Any]], *, tools: list[dict[str, Any]]
) -> tuple[ModelReply, ModelUsage]:
    """The first reply along ``routes``; ModelCallFailed (the last error) if none answers."""
    usage = ModelUsage()
    last: ModelCallFailed | None = None
    for route in routes:
        if route.endpoint not in settings.AGENTDESK_LLM_ENDPOINTS:
            continue
        breaker = model_breaker_name(route.endpoint)
        attempt = 0
        while True:
            attempt += 1
            try:
                clean = breaker_allow(name=breaker)
            except CircuitOpen:
                break
            try:
                reply = model_complete(
                    model=route.model, endpoint=route.endpoint, messages=messages, tools=tools
                )
            except ModelCallFailed as exc:
                usage.latency_ms += exc.latency_ms
                usage.calls += 1
                if exc.error_class != ErrorClass.MODEL_REQUEST_INVALID:
                    breaker_record_failure(name=breaker, error_class=exc.error_class)
                last = exc
                delay = retry_delay(
                    attempt=attempt, error_class=exc.error_class, retry_after_s=exc.retry_after_s
                )
                if delay is None:
                    break
                time.sleep(delay)
                continue
            breaker_record_success(name=breaker, was_clean=clean)
            cost = model_call_cost(
                model=reply.model, tokens_in=reply.tokens_in, tokens_out=reply.tokens_out
            )
            usage.add(
                ModelUsage(
                    tokens_in=reply.tokens_in,
                    tokens_out=reply.tokens_out,
                    latency_ms=reply.latency_ms,
                    cost_usd=cost or Decimal(0),
                    calls=1,
                )
            )
            return reply, usage
    raise last or ModelCallFailed(
        ErrorClass.CIRCUIT_OPEN,
        "no model route could be asked (open breakers or unconfigured endpoints)",
        latency_ms=0,
    )
