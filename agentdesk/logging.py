"""A trace id on every log line of a run, and of a web request.

The runtime binds the run's trace id with ``trace_context`` around everything it does for
the run; ``RequestIdMiddleware`` binds a request id (``req-`` and 24 hex digits, or the
caller's ``X-Request-ID``) around each web request. The filter copies it onto each record
so the formatter can print it, and audit events made without a run record it as their
trace id (audit.log), so an auditor can find everything one request changed, and the
log lines it wrote. A ContextVar, not a thread-local, so it is right under threads and
asyncio alike.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.http import HttpRequest, HttpResponse

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


# What a caller may pass as its own request id: short and harmless in a log line or a URL.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{7,31}")
REQUEST_ID_HEADER = "X-Request-ID"


_request_id: ContextVar[str] = ContextVar("agentdesk_request_id", default="")


def current_request_id() -> str:
    """The id RequestIdMiddleware bound for this web request; "" outside one."""
    return _request_id.get()


class RequestIdMiddleware:
    """Bind a request id around each request and return it in ``X-Request-ID``.

    A valid id sent by the caller (a proxy, a client retrying) is kept, so one id follows
    a request across systems; anything else is replaced by a fresh one.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        sent = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = sent if _REQUEST_ID.fullmatch(sent) else f"req-{uuid.uuid4().hex[:24]}"
        token = _request_id.set(request_id)
        try:
            with trace_context(request_id):
                response = self.get_response(request)
        finally:
            _request_id.reset(token)
        response[REQUEST_ID_HEADER] = request_id
        return response


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


class ExpectedDenialFilter(logging.Filter):
    """One line, no traceback, for a request refused on purpose.

    Django logs a 403 (PermissionDenied) and a 400 (BadRequest) at WARNING with the
    exception's traceback attached, so every stranger poking at an address wrote twenty
    lines that looked like a crash. A denial is an answer, not a failure: the line
    ("Forbidden (Permission denied): /inbox/requests/7/approve") stays, the traceback goes.
    Anything else, and every 5xx, keeps its traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from django.core.exceptions import BadRequest, PermissionDenied
        from django.http import Http404

        if record.exc_info and isinstance(
            record.exc_info[1], PermissionDenied | BadRequest | Http404
        ):
            record.exc_info = None
            record.exc_text = None
        return True
