"""The audit log's pages: search, read and export, for auditors.

The pages are for holders of the model permission audit.view_auditevent (auditors and
superusers): the log covers every queue and run, so there is no per-object access to
check; anyone else logged in gets 403 and learns nothing, not even a count.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.http import urlencode

from agentdesk.http import HtmxHttpRequest
from agentdesk.query import query_number
from audit import selectors
from audit.forms import AuditSearchForm
from audit.models import AuditEvent
from audit.selectors import AuditFilters

# --- the audit log, for auditors -------------------------------------------------------------

AUDIT_PAGE_SIZE = 50
AUDIT_EXPORT_MAX = 100_000  # rows per CSV export; narrow the filter for more
_OBJECT_LINKS = {
    "run": "runs:detail",
    "approval_request": "reviews:detail",
    "agent_config": "agents:detail",
    "prompt": "prompts:detail",
    "release": "releases:detail",
}
CSV_COLUMNS = (
    "seq",
    "created_at",
    "actor",
    "verb",
    "object_type",
    "object_id",
    "before",
    "after",
    "trace_id",
    "hash",
)


def _require_auditor(request: HttpRequest) -> None:
    """The audit log is for holders of audit.view_auditevent (auditors, superusers)."""
    if not request.user.has_perm("audit.view_auditevent"):
        raise PermissionDenied


def _object_url(event: AuditEvent) -> str:
    name = _OBJECT_LINKS.get(event.object_type)
    if name is None:
        return ""
    try:
        return reverse(name, args=[event.object_id])
    except NoReverseMatch:  # an id that is not one (old or hand-made events)
        return ""


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True)
class AuditRow:
    event: AuditEvent
    object_url: str
    changes: list[tuple[str, str, str]]  # field, before, after ("" when absent)


def _changes(before: Any, after: Any) -> list[tuple[str, str, str]]:
    """before/after side by side, field by field; a non-mapping value as one row."""
    if isinstance(before, dict | None) and isinstance(after, dict | None):
        b, a = before or {}, after or {}
        keys = sorted({*b, *a})
        return [
            (key, _shown(b[key]) if key in b else "", _shown(a[key]) if key in a else "")
            for key in keys
        ]
    return [("", _shown(before), _shown(after))]


@login_required
def audit_list(request: HtmxHttpRequest) -> HttpResponse:
    """Search the audit log; newest first, keyset pages on seq."""
    _require_auditor(request)
    form = AuditSearchForm(request.GET or None)
    page = None
    query = ""
    if not request.GET or form.is_valid():
        filters = form.filters() if form.is_bound else AuditFilters()
        page = selectors.audit_page(
            filters=filters,
            before=query_number(request.GET, "before"),
            after=query_number(request.GET, "after"),
            size=AUDIT_PAGE_SIZE,
        )
        query = urlencode(
            [(k, str(v)) for k, v in request.GET.items() if k not in ("before", "after") and v]
        )
    context = {
        "form": form,
        "page": page,
        "rows": [
            AuditRow(event=e, object_url=_object_url(e), changes=_changes(e.before, e.after))
            for e in (page.events if page else [])
        ],
        "query": query,
        "export_max": AUDIT_EXPORT_MAX,
    }
    template = "audit/list.html#results" if request.htmx else "audit/list.html"
    return render(request, template, context, status=200 if page is not None else 400)


class _Echo:
    """A file-like object whose write returns the line, for csv.writer in a generator."""

    def write(self, value: str) -> str:
        return value


@login_required
def audit_export(request: HttpRequest) -> HttpResponseBase:
    """The current filter's events as CSV (newest first, at most AUDIT_EXPORT_MAX), streamed."""
    _require_auditor(request)
    form = AuditSearchForm(request.GET)
    if not form.is_valid():
        return HttpResponse(
            "Invalid filter: "
            + "; ".join(f"{k}: {' '.join(str(m) for m in v)}" for k, v in form.errors.items()),
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    events = selectors.audit_events_for_export(filters=form.filters(), limit=AUDIT_EXPORT_MAX)
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow(CSV_COLUMNS)
        for e in events:
            yield writer.writerow(
                [
                    e.seq,
                    e.created_at.isoformat(),
                    e.actor_label,
                    e.verb,
                    e.object_type,
                    e.object_id,
                    "" if e.before is None else _shown(e.before),
                    "" if e.after is None else _shown(e.after),
                    e.trace_id,
                    e.hash,
                ]
            )

    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    return StreamingHttpResponse(
        lines(),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.csv"'},
    )
