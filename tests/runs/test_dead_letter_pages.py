"""The dead-letter pages and command: who may see and act, and what acting does."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from agentdesk.errors import ErrorClass, error_payload
from runs import services
from runs.models import DeadLetter, DeadLetterStatus, Run, RunState
from tests.runs.factories import ticket_input

pytestmark = pytest.mark.django_db


@pytest.fixture
def letter(db: None) -> DeadLetter:
    run, _ = services.run_submit(agent_name="support", run_input=ticket_input())
    error = error_payload(ErrorClass.INTERNAL_ERROR, "step 3 raised <b>RuntimeError</b>")
    Run.objects.filter(pk=run.pk).update(state=RunState.DEAD_LETTERED, error=error, next_seq=3)
    return DeadLetter.objects.create(run=run, seq=3, error=error)


def _as(client: Client, user: Any) -> Client:
    client.force_login(user)
    return client


def test_operator_sees_and_requeues(client: Client, letter: DeadLetter, operator: Any) -> None:
    _as(client, operator)

    listing = client.get("/runs/dead-letters/").content.decode()
    detail = client.get(f"/runs/dead-letters/{letter.pk}/").content.decode()
    response = client.post(f"/runs/dead-letters/{letter.pk}/requeue/")

    assert "internal_error" in listing
    assert "&lt;b&gt;RuntimeError&lt;/b&gt;" in detail  # error text is data, never markup
    assert response.status_code == 302
    letter.refresh_from_db()
    run = Run.objects.get(pk=letter.run_id)
    assert (letter.status, run.state, run.next_seq) == ("requeued", "running", 3)


def test_auditor_may_look_but_not_act(client: Client, letter: DeadLetter, auditor: Any) -> None:
    _as(client, auditor)

    assert client.get("/runs/dead-letters/").status_code == 200
    assert client.get(f"/runs/dead-letters/{letter.pk}/").status_code == 200
    assert client.post(f"/runs/dead-letters/{letter.pk}/requeue/").status_code == 403
    assert client.post(f"/runs/dead-letters/{letter.pk}/discard/").status_code == 403
    letter.refresh_from_db()
    assert letter.status == DeadLetterStatus.OPEN


@pytest.mark.parametrize("persona", ["reviewer", "outsider"])
def test_others_get_nothing(client: Client, letter: DeadLetter, persona: str, request: Any) -> None:
    _as(client, request.getfixturevalue(persona))

    assert client.get("/runs/dead-letters/").status_code == 403
    assert client.get(f"/runs/dead-letters/{letter.pk}/").status_code == 404
    assert client.post(f"/runs/dead-letters/{letter.pk}/requeue/").status_code == 404
    letter.refresh_from_db()
    assert letter.status == DeadLetterStatus.OPEN


def test_unknown_letter_or_action_is_404(client: Client, letter: DeadLetter, operator: Any) -> None:
    _as(client, operator)

    assert client.post("/runs/dead-letters/999999/requeue/").status_code == 404
    assert client.post(f"/runs/dead-letters/{letter.pk}/explode/").status_code == 404
    assert client.get(f"/runs/dead-letters/{letter.pk}/requeue/").status_code == 405


def test_second_click_says_who_acted_first(
    client: Client, letter: DeadLetter, operator: Any
) -> None:
    _as(client, operator)
    client.post(f"/runs/dead-letters/{letter.pk}/discard/")

    response = client.post(f"/runs/dead-letters/{letter.pk}/requeue/", follow=True)

    assert "already discarded by otto" in response.content.decode()
    assert Run.objects.get(pk=letter.run_id).state == RunState.DEAD_LETTERED


def test_command_lists_shows_and_requeues(letter: DeadLetter) -> None:
    out = StringIO()
    call_command("dead_letters", "list", stdout=out)
    call_command("dead_letters", "show", str(letter.pk), stdout=out)
    call_command("dead_letters", "requeue", str(letter.pk), stdout=out)

    text = out.getvalue()
    assert str(letter.run_id) in text
    assert '"class": "internal_error"' in text
    assert f"dead letter {letter.pk} requeued" in text
    with pytest.raises(CommandError, match="already requeued by someone"):
        call_command("dead_letters", "discard", str(letter.pk))
    with pytest.raises(CommandError, match="no dead letter 424242"):
        call_command("dead_letters", "show", "424242")
