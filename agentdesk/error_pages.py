"""What a person (or a script) gets when a request cannot be served: 400, 403, 404, 503.

- 403 and 404 are Django's own handlers with this project's templates (403.html,
  404.html): friendly, in the house layout, saying what to do next. A 404 never says
  whether the thing exists (invariant 9).
- 400: ``bad_request`` shows the message of a ``BadRequest`` the code raised on purpose
  (agentdesk.query names the bad parameter); any other 400 (a SuspiciousOperation) gets
  the generic text, since its message may quote what the client sent.
- 503: ``DatabaseUnavailableMiddleware`` turns a database outage met by a view into a
  503 (JSON under /api/, a page elsewhere) instead of a 500 and a traceback per request.
  The failing statement was not committed, so nothing was written; the page says so.

Each of them logs one line: agentdesk.logging.ExpectedDenialFilter drops the traceback
Django attaches to a 400 or 403, and the outage is one ERROR line per request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import BadRequest
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string

from agentdesk.logging import current_request_id

log = logging.getLogger("agentdesk.errors")

DATABASE_DOWN = "The database is not answering, so AgentDesk cannot read or save anything."
RETRY_AFTER_S = 30


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400: the message of our own BadRequest, or a generic one."""
    message = str(exception) if type(exception) is BadRequest else ""
    context = {"message": message, "request_id": current_request_id()}
    return render(request, "400.html", context, status=400)


class DatabaseUnavailableMiddleware:
    """A view that meets OperationalError or InterfaceError answers 503, not 500.

    Last in MIDDLEWARE, so its ``process_exception`` is the first to see a view's
    exception. The page is rendered without the request: the header would look the user
    up, which needs the database that is down.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        # One line: the class and the driver's message (host and port, never a password).
        log.error(
            "database unavailable, %s %s answered 503: %s: %s",
            request.method,
            request.path,
            type(exception).__name__,
            str(exception).splitlines()[0] if str(exception) else "",
        )
        response: HttpResponse
        if request.path.startswith("/api/"):
            response = JsonResponse(
                {"error": {"message": f"{DATABASE_DOWN} Nothing was changed; try again."}},
                status=503,
            )
        else:
            context = {"message": DATABASE_DOWN, "request_id": current_request_id()}
            response = HttpResponse(render_to_string("503.html", context), status=503)
        response["Retry-After"] = str(RETRY_AFTER_S)
        return response
