"""A trace id on every log line of a run.

The runtime binds the run's trace id with ``trace_context`` around everything it does for
the run; the filter copies it onto each record so the formatter can print it. A
ContextVar, not a thread-local, so it is right under threads and asyncio alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_trace_id: ContextVar[str] = ContextVar("agentdesk_trace_id", default="-")


def current_trace_id() -> str:
    return _trace_id.get()


@contextmanager
def trace_context(trace_id: str) -> Iterator[None]:
    token = _trace_id.set(trace_id)
    try:
        yield
    finally:
        _trace_id.reset(token)


class TraceIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = _trace_id.get()
        return True


class RedactingFilter(logging.Filter):
    """Secrets out of every log line: the message, its arguments and any traceback.

    Installed on every handler in settings.LOGGING. It rewrites the record in place (the
    formatted message, no arguments left; the traceback text), so handlers that see the
    record afterwards see the redacted text too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from agentdesk.redaction import redact_text

        try:
            message = record.getMessage()
        except Exception:  # a broken format string: log what there is, redacted
            message = f"{record.msg} {record.args}"
        record.msg = redact_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True
