"""When to try a failed model or tool call again, and after how long.

The policy is tenacity's (exponential backoff with jitter, a stop after N attempts, a
retry predicate), but no task sleeps: the runtime asks this module for the delay and
schedules the next attempt as a Celery task with that countdown. Retry-After from a rate
limit is honoured when it asks for longer.
"""

from __future__ import annotations

from django.conf import settings
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from agentdesk.errors import ErrorClass

TRANSIENT = frozenset(
    {
        ErrorClass.MODEL_TIMEOUT,
        ErrorClass.MODEL_RATE_LIMITED,
        ErrorClass.MODEL_SERVER_ERROR,
        ErrorClass.MODEL_CONNECTION_ERROR,
        ErrorClass.TOOL_TIMEOUT,
        ErrorClass.TOOL_CRASHED,
    }
)


class CallFailed(Exception):
    """One failed attempt, as tenacity's predicates see it."""

    def __init__(self, error_class: str) -> None:
        super().__init__(error_class)
        self.error_class = error_class


def _policy() -> Retrying:
    return Retrying(
        stop=stop_after_attempt(settings.AGENTDESK_RETRY_ATTEMPTS),
        wait=wait_exponential_jitter(
            multiplier=0.5, max=settings.AGENTDESK_RETRY_MAX_WAIT_S, jitter=0.5
        ),
        retry=retry_if_exception(
            lambda exc: isinstance(exc, CallFailed) and exc.error_class in TRANSIENT
        ),
    )


def retry_delay(
    *, attempt: int, error_class: str, retry_after_s: float | None = None
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None to stop retrying.

    ``attempt`` counts from 1: the attempt that just failed.
    """
    policy = _policy()
    state = RetryCallState(policy, fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    failure = CallFailed(error_class)
    state.set_exception((CallFailed, failure, None))
    if not policy.retry(state) or policy.stop(state):
        return None
    delay = policy.wait(state)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, settings.AGENTDESK_RETRY_MAX_WAIT_S))
    return float(delay)
