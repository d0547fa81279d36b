"""Secrets are redacted: the redactor itself, and every storage path of a real run."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from agentdesk import redaction
from agentdesk.redaction import redact_text, redact_value
from audit.log import audit_record
from audit.models import AuditEvent
from examples.support.seed import seed_shop
from runs import services as run_services
from runs.models import Run, Step
from tests.processes import Simulator
from tests.runs.factories import drive, ticket_input

# --- the redactor ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key sk-proj-A1b2C3d4E5f6G7h8I9j0 ok", "key [REDACTED:api_key] ok"),
        ("sk_live_51Habcdefghijklmnop", "[REDACTED:api_key]"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "token [REDACTED:api_key]"),
        ("slack xoxb-1234567890-abcdefghij", "slack [REDACTED:api_key]"),
        ("aws AKIAIOSFODNN7EXAMPLE.", "aws [REDACTED:api_key]."),
        ("Authorization: Bearer abc.def-ghi12345", "Authorization: Bearer [REDACTED:bearer]"),
        ("Authorization: Basic dXNlcjpwYXNzMQ==", "Authorization: Basic [REDACTED:bearer]"),
        ("postgres://bob:hunter2@db:5432/x", "postgres://bob:***@db:5432/x"),
        ("see https://jane:S3cr3t!@shop.example.com/a", "see https://jane:***@shop.example.com/a"),
        ("password=hunter2&user=jane", "password=[REDACTED:secret]&user=jane"),
        ("api_key: abc123xyz", "api_key: [REDACTED:secret]"),
        ('{"token": "abc123xyz"}', '{"token": "[REDACTED:secret]"}'),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9",
            "jwt [REDACTED:jwt]",
        ),
        ("card 4111 1111 1111 1111 thanks", "card [REDACTED:card] thanks"),
        ("card 4111-1111-1111-1111", "card [REDACTED:card]"),
        ("card 4242424242424242.", "card [REDACTED:card]."),
        ("amex 3782 822463 10005", "amex [REDACTED:card]"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
            "[REDACTED:private_key]",
        ),
    ],
)
def test_secrets_are_replaced_by_their_placeholder(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert redact_text(expected) == expected  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "Order SO-1002 arrived broken; please refund 29.00 EUR.",
        "Ticket T-0002, order SO-1001, placed 2024-05-01T10:20:30Z",
        "Call me on +1 415 555 0100 or 020 7946 0958",
        "Tracking 1Z999AA10123456784 and reference 4111-1111-1111-1112",  # Luhn fails
        "Order 1234567890123 is late",  # 13 digits that fail the Luhn check
        "trace 6f1c2d3e4a5b60718293a4b5c6d7e8f9 and hash 5e884898da28047151d0e56f8dc6292773603d0d",
        "We have tokens_in=512 and tokens_out=64, cost 0.0012",
        "a bearer instrument; Basic questions; the password is on its way",
        "https://shop.example.com/orders/SO-1002?user=jane",
        "jane@example.com wrote at 10:30",
        "sk-test",  # too short to be a key, unless it is the configured one
    ],
)
def test_ordinary_text_is_left_alone(text: str, settings: Any) -> None:
    settings.AGENTDESK_LLM_ENDPOINTS = {"default": {"base_url": "http://x/v1", "api_key": "none"}}
    assert redact_text(text) == text


def test_the_configured_api_keys_are_redacted_whatever_they_look_like(settings: Any) -> None:
    settings.AGENTDESK_LLM_ENDPOINTS = {
        "default": {"base_url": "http://a/v1", "api_key": "local-key-7"},
        "backup": {"base_url": "http://b/v1", "api_key": "Zq9!plain"},
        "tiny": {"base_url": "http://c/v1", "api_key": "x"},  # too short to redact by value
    }

    assert redact_text("keys local-key-7 and Zq9!plain, x") == (
        "keys [REDACTED:api_key] and [REDACTED:api_key], x"
    )


def test_clean_texts_are_remembered_and_secrets_never_are(settings: Any) -> None:
    settings.AGENTDESK_LLM_ENDPOINTS = {"default": {"base_url": "http://a/v1", "api_key": "none"}}
    clean, secret = "order SO-1042 shipped on time", "password=hunter2 for SO-1042"

    assert redact_text(clean) == clean
    assert redact_text(clean) == clean
    assert (clean, ("none",)) in redaction._clean
    assert redact_text(secret) == redact_text(secret) == "password=[REDACTED:secret] for SO-1042"
    assert not any(secret in text for text, _ in redaction._clean)
    too_long = "x" * (redaction.MEMO_MAX_CHARS + 1)
    assert redact_text(too_long) == too_long
    assert not any(text == too_long for text, _ in redaction._clean)


def test_a_remembered_text_is_redacted_once_it_holds_a_newly_configured_key(
    settings: Any,
) -> None:
    text = "the backup endpoint answers to rotated-key-42 now"
    settings.AGENTDESK_LLM_ENDPOINTS = {"default": {"base_url": "http://a/v1", "api_key": "none"}}
    assert redact_text(text) == text

    settings.AGENTDESK_LLM_ENDPOINTS = {
        "default": {"base_url": "http://a/v1", "api_key": "rotated-key-42"}
    }
    assert redact_text(text) == "the backup endpoint answers to [REDACTED:api_key] now"


def test_the_memory_of_clean_texts_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redaction, "MEMO_SIZE", 50)
    monkeypatch.setattr(redaction, "_clean", {})
    for i in range(120):
        assert redact_text(f"ticket {i} is about a kettle") == f"ticket {i} is about a kettle"
    remembered = [text for text, _ in redaction._clean]
    assert remembered == [f"ticket {i} is about a kettle" for i in range(70, 120)]


def test_structured_values_are_redacted_by_key_name_and_content() -> None:
    value = {
        "password": "hunter2",
        "Authorization": "Bearer abc",
        "nested": [{"api_key": "k-123456"}, "card 4111 1111 1111 1111"],
        "tokens_in": 12,
        "amount": "29.00",
        "order_id": "SO-1002",
        "token": None,
    }

    assert redact_value(value) == {
        "password": "[REDACTED:secret]",
        "Authorization": "[REDACTED:secret]",
        "nested": [{"api_key": "[REDACTED:secret]"}, "card [REDACTED:card]"],
        "tokens_in": 12,
        "amount": "29.00",
        "order_id": "SO-1002",
        "token": None,
    }


def test_log_lines_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("runs.services")
    with caplog.at_level(logging.INFO):
        log.info("calling %s with %s", "https://u:pw-123@x.example/v1", {"api_key": "abc"})
        try:
            raise ValueError("card 4111 1111 1111 1111 refused")
        except ValueError:
            log.exception("tool failed for sk-proj-A1b2C3d4E5f6G7h8I9j0")

    assert caplog.messages[:2] == [
        "calling https://u:***@x.example/v1 with {'api_key': '[REDACTED:secret]'}",
        "tool failed for [REDACTED:api_key]",
    ]
    assert "4111" not in caplog.text
    assert "card [REDACTED:card] refused" in caplog.text


# --- every storage path of a run -------------------------------------------------------------

API_KEY = "sk-proj-Zx81Qw72Er63Ty54Ui45"
CARD = "4111 1111 1111 1111"
URL_PASSWORD = "Tr0ub4dor3Horse"
CONFIGURED_KEY = "sk-test"  # the model_endpoint fixture's key
SECRETS = (API_KEY, CARD, CARD.replace(" ", ""), URL_PASSWORD, CONFIGURED_KEY)


def _leaks(where: str, value: Any) -> list[str]:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return [f"{secret!r} in {where}" for secret in SECRETS if secret in text]


@pytest.mark.django_db
def test_secrets_in_a_ticket_reach_no_prompt_step_log_or_audit_event(
    model_endpoint: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    seed_shop()
    body = (
        f"Hi, order SO-1001 has not arrived. My card {CARD} was charged. Our API key is "
        f"{API_KEY} and the portal https://jane:{URL_PASSWORD}@portal.example.com/orders "
        f"says nothing. Also, {CONFIGURED_KEY} appears in my invoice. Jane"
    )
    with caplog.at_level(logging.DEBUG):
        run, _ = run_services.run_submit(agent_name="support", run_input=ticket_input(body=body))
        logging.getLogger("runs.services").warning("ticket body was: %s", body)
        run = drive(run)

    run.refresh_from_db()
    steps = list(Step.objects.filter(run=run).order_by("seq"))
    assert len(steps) >= 2
    leaks = _leaks("Run.input", run.input)
    leaks += _leaks("checkpoint messages", run.checkpoint["messages"])
    leaks += _leaks("Run.output", run.output)
    for step in steps:
        for name in ("state", "action", "reason", "outcome", "error_class"):
            leaks += _leaks(f"step {step.seq} {name}", getattr(step, name))
    for event in AuditEvent.objects.all():
        leaks += _leaks(f"audit event {event.seq}", [event.before, event.after])
    leaks += _leaks("the log", caplog.text)
    assert leaks == []

    user_message = run.checkpoint["messages"][1]["content"]
    assert "[REDACTED:card]" in user_message
    assert "[REDACTED:api_key]" in user_message
    assert "https://jane:***@portal.example.com/orders" in user_message
    assert "SO-1001" in user_message  # what the agent needs is still there
    assert run.input["body"].startswith(
        "Hi, order SO-1001 has not arrived. My card [REDACTED:card]"
    )
    assert "[REDACTED:card]" in caplog.text


@pytest.mark.django_db
def test_tool_results_and_model_replies_are_redacted_in_the_checkpoint(
    model_endpoint: Simulator,
) -> None:
    """What commit() saves for the next prompt is redacted, whichever step appended it."""
    from runs.kernel.stepping import claim, commit

    run, _ = run_services.run_submit(agent_name="support", run_input=ticket_input())
    claimed = claim(str(run.id), run.next_seq)
    assert claimed is not None

    def apply(locked: Run, work: object) -> None:
        locked.checkpoint["messages"].append(
            {"role": "tool", "tool_call_id": "c1", "content": f'{{"card": "{CARD}"}}'}
        )
        locked.checkpoint["messages"].append(
            {"role": "assistant", "content": f"Use {API_KEY} to log in"}
        )

    assert commit(claimed, run.next_seq, apply) is True

    run.refresh_from_db()
    assert run.checkpoint["messages"][-2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": '{"card": "[REDACTED:card]"}'},
        {"role": "assistant", "content": "Use [REDACTED:api_key] to log in"},
    ]


@pytest.mark.django_db
def test_audit_events_are_redacted_before_they_are_hashed() -> None:
    from django.db import transaction

    with transaction.atomic():
        event = audit_record(
            actor=None,
            verb="queue.changed",
            object_type="queue",
            object_id="1",
            before={"webhook": "https://ops:S3cretPass@hooks.example.com/x"},
            after={"webhook": "https://hooks.example.com/x", "password": "hunter2"},
        )

    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.before == {"webhook": "https://ops:***@hooks.example.com/x"}
    assert stored.after == {
        "webhook": "https://hooks.example.com/x",
        "password": "[REDACTED:secret]",
    }
