"""The auditor pages: who may see them, search, keyset pages, links, escaping, CSV export."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit import views
from audit.log import audit_record
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db

LIST = reverse("audit:list")
EXPORT = reverse("audit:export")


def _event(verb: str = "run.started", **fields: Any) -> AuditEvent:
    with transaction.atomic():
        return audit_record(
            actor=fields.pop("actor", None),
            verb=verb,
            object_type=fields.pop("object_type", "run"),
            object_id=fields.pop("object_id", str(uuid.uuid4())),
            before=fields.pop("before", {"state": "queued"}),
            after=fields.pop("after", {"state": "running"}),
            trace_id=fields.pop("trace_id", ""),
            actor_label=fields.pop("actor_label", ""),
        )


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _seqs(response: Any) -> list[int]:
    return [row.event.seq for row in response.context["rows"]]


# --- permissions -----------------------------------------------------------------------------


@pytest.mark.parametrize("url", [LIST, EXPORT])
@pytest.mark.parametrize("persona", ["reviewer", "operator", "outsider"])
def test_people_without_the_audit_permission_get_403_and_no_data(
    url: str, persona: str, request: pytest.FixtureRequest
) -> None:
    _event(verb="request.approve", object_id="secret-object-42", actor_label="rita")

    response = _client(request.getfixturevalue(persona)).get(url, {"verb": "request"})

    assert response.status_code == 403
    assert not hasattr(response, "streaming_content")
    body = response.content.decode()
    assert "secret-object-42" not in body
    assert "request.approve" not in body


@pytest.mark.parametrize("url", [LIST, EXPORT])
def test_anonymous_visitors_are_sent_to_log_in(url: str) -> None:
    response = Client().get(url)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"


def test_auditors_and_superusers_see_the_log(auditor: Any) -> None:
    event = _event(object_id="obj-1")
    admin = get_user_model().objects.create_superuser("root", password="pw")

    for user in (auditor, admin):
        response = _client(user).get(LIST)
        assert response.status_code == 200
        assert _seqs(response) == [event.seq]


def test_the_nav_link_shows_only_to_auditors(auditor: Any, reviewer: Any) -> None:
    link = f'<a href="{LIST}"'
    runs = reverse("runs:list")

    assert link in _client(auditor).get(runs).content.decode()
    assert link not in _client(reviewer).get(runs).content.decode()


# --- search ----------------------------------------------------------------------------------


def test_filters_by_actor_object_verb_time_and_trace(auditor: Any, reviewer: Any) -> None:
    a = _event(verb="run.submitted", actor=reviewer, object_id="r-1", trace_id="t" * 32)
    b = _event(verb="request.approve", object_type="approval_request", object_id="7")
    c = _event(verb="request.reject", object_type="approval_request", object_id="8")
    d = _event(verb="run.started", actor_label="worker", object_id="r-1", trace_id="t" * 32)
    client = _client(auditor)

    def seqs(**params: str) -> list[int]:
        response = client.get(LIST, params)
        assert response.status_code == 200, response.content
        return _seqs(response)

    assert seqs() == [d.seq, c.seq, b.seq, a.seq]
    assert seqs(actor="rita") == [a.seq]
    assert seqs(actor="worker") == [d.seq]
    assert seqs(object_type="approval_request") == [c.seq, b.seq]
    assert seqs(object_type="approval_request", object_id="8") == [c.seq]
    assert seqs(object_id="r-1") == [d.seq, a.seq]
    assert seqs(verb="request.") == [c.seq, b.seq]
    assert seqs(verb="run.st") == [d.seq]
    assert seqs(trace_id="t" * 32) == [d.seq, a.seq]
    now = timezone.now()
    later = (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    earlier = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert seqs(since=earlier, until=later) == [d.seq, c.seq, b.seq, a.seq]
    assert seqs(since=later) == []
    assert seqs(until=earlier) == []


def test_a_time_range_finds_exactly_the_events_inside_it(
    auditor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = timezone.now().replace(microsecond=0) - timedelta(days=3)
    events = []
    for hours in (0, 1, 2, 3, 4):
        monkeypatch.setattr(timezone, "now", lambda h=hours: base + timedelta(hours=h))
        events.append(_event())
    monkeypatch.undo()
    client = _client(auditor)

    def seqs(since: timedelta | None, until: timedelta | None) -> list[int]:
        params = {}
        if since is not None:
            params["since"] = (base + since).strftime("%Y-%m-%dT%H:%M")
        if until is not None:
            params["until"] = (base + until).strftime("%Y-%m-%dT%H:%M")
        return _seqs(client.get(LIST, params))

    seq = [e.seq for e in events]
    assert seqs(timedelta(hours=1), timedelta(hours=3)) == [seq[2], seq[1]]
    assert seqs(timedelta(hours=3), None) == [seq[4], seq[3]]
    assert seqs(None, timedelta(hours=1)) == [seq[0]]
    assert seqs(timedelta(hours=5), None) == []
    assert seqs(None, timedelta(hours=-1)) == []


def test_an_invalid_filter_is_explained_and_shows_nothing(auditor: Any) -> None:
    _event()
    client = _client(auditor)

    response = client.get(LIST, {"since": "yesterday"})
    assert response.status_code == 400
    assert response.context["rows"] == []
    assert "Enter a valid date/time." in response.content.decode()

    response = client.get(LIST, {"since": "2026-01-02T00:00", "until": "2026-01-01T00:00"})
    assert "The end of the range must come after its start." in response.content.decode()
    assert client.get(EXPORT, {"since": "yesterday"}).status_code == 400


def test_htmx_gets_only_the_results(auditor: Any) -> None:
    _event()

    response = _client(auditor).get(LIST, {"verb": "run"}, HTTP_HX_REQUEST="true")

    body = response.content.decode()
    assert body.lstrip().startswith('<div id="audit-results">')
    assert "<html" not in body


def test_links_lead_to_the_run_and_the_request(auditor: Any) -> None:
    run_id = str(uuid.uuid4())
    _event(object_type="run", object_id=run_id)
    _event(object_type="approval_request", object_id="12")
    _event(object_type="queue", object_id="3")
    _event(object_type="run", object_id="not-a-uuid")

    rows = _client(auditor).get(LIST).context["rows"]

    assert [r.object_url for r in rows] == [
        "",
        "",
        reverse("reviews:detail", args=[12]),
        reverse("runs:detail", args=[run_id]),
    ]


def test_before_and_after_are_shown_field_by_field_and_escaped(auditor: Any) -> None:
    _event(
        before={"state": "queued", "note": "<b>old</b>"},
        after={"state": "running", "note": "<script>alert(1)</script>", "n": [1, 2]},
    )

    response = _client(auditor).get(LIST)

    assert response.context["rows"][0].changes == [
        ("n", "", "[1, 2]"),
        ("note", "<b>old</b>", "<script>alert(1)</script>"),
        ("state", "queued", "running"),
    ]
    body = response.content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "&lt;b&gt;old&lt;/b&gt;" in body


# --- keyset pages ----------------------------------------------------------------------------


def test_pages_follow_seq_newest_first_without_offsets(
    auditor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "AUDIT_PAGE_SIZE", 10)
    events = [_event(verb="run.started" if i % 2 else "run.submitted") for i in range(25)]
    seq = [e.seq for e in events]
    client = _client(auditor)

    first = client.get(LIST)
    assert _seqs(first) == seq[::-1][:10]
    assert (first.context["page"].newer_than, first.context["page"].older_than) == (None, seq[15])

    second = client.get(LIST, {"before": seq[15]})
    assert _seqs(second) == seq[::-1][10:20]
    assert second.context["page"].newer_than == seq[24 - 10]
    assert f"before={seq[5]}" in second.content.decode()

    last = client.get(LIST, {"before": seq[5]})
    assert _seqs(last) == seq[4::-1]
    assert last.context["page"].older_than is None

    back = client.get(LIST, {"after": seq[4]})
    assert _seqs(back) == seq[14:4:-1]
    assert (back.context["page"].newer_than, back.context["page"].older_than) == (
        seq[14],
        seq[5],
    )

    filtered = client.get(LIST, {"verb": "run.started", "before": seq[15]})
    assert _seqs(filtered) == [s for s in seq[::-1] if s < seq[15] and s % 2 == seq[1] % 2][:10]
    assert filtered.context["page"].older_than is None
    assert f"verb=run.started&after={_seqs(filtered)[0]}" in filtered.content.decode()


def test_a_page_costs_the_same_queries_whatever_its_position(
    auditor: Any, django_assert_num_queries: Any
) -> None:
    events = [_event() for _ in range(60)]
    client = _client(auditor)
    client.get(LIST)  # session and permission caches warm

    # session, user, user and group permissions, the page
    with django_assert_num_queries(5):
        client.get(LIST, {"before": events[-1].seq})
    with django_assert_num_queries(5):
        client.get(LIST, {"before": events[20].seq})


# --- CSV export ------------------------------------------------------------------------------


def _csv(response: Any) -> list[list[str]]:
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    text = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(text)))


def test_the_export_is_the_current_filter_as_csv(auditor: Any, reviewer: Any) -> None:
    _event(verb="run.submitted", object_id="r-1")
    approve = _event(
        verb="request.approve",
        actor=reviewer,
        object_type="approval_request",
        object_id="7",
        before={"state": "pending"},
        after={"state": "approved", "reason": 'ok, "fine"'},
        trace_id="a" * 32,
    )

    rows = _csv(_client(auditor).get(EXPORT, {"verb": "request."}))

    assert rows == [
        list(views.CSV_COLUMNS),
        [
            str(approve.seq),
            approve.created_at.isoformat(),
            "rita",
            "request.approve",
            "approval_request",
            "7",
            '{"state": "pending"}',
            '{"reason": "ok, \\"fine\\"", "state": "approved"}',
            "a" * 32,
            approve.hash,
        ],
    ]


def test_the_export_is_bounded(auditor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "AUDIT_EXPORT_MAX", 3)
    events = [_event() for _ in range(5)]

    rows = _csv(_client(auditor).get(EXPORT))

    assert [row[0] for row in rows[1:]] == [str(e.seq) for e in events[:1:-1]]
