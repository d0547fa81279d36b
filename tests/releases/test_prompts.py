"""Prompt versions: the first use, validation, canonical text, create, numbering, diff, render.

Which version runs is a release's business (tests/releases/test_releases.py); here a
label only matters to show that storing a version moves none, and that a run renders
the prompt of production's release and keeps it while in flight.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from string import Template
from typing import Any

import pytest
from django.db import connections

from agents.registry import agent_get
from audit.models import AuditEvent
from examples.support.agent import SYSTEM_PROMPT, SupportTicketInput, support_prompt_context
from examples.support.policy_text import SHOP_NAME
from examples.support.seed import seed_shop
from releases import prompts, services
from releases.models import PromptVersion, Release, ReleaseLabel, ReleaseLabelMove
from releases.prompts import PromptRefused
from runs import services as run_services
from runs.models import RunState, StepKind
from tests.processes import Simulator
from tests.runs.factories import drive, seeded_ticket_input

AGENT = "support"
V1_HASH = hashlib.sha256(SYSTEM_PROMPT.encode()).hexdigest()
V2_TEXT = SYSTEM_PROMPT + "Sign off with the customer's first name when you know it.\n"


def _state() -> tuple[list[tuple[int, str]], dict[str, int], int, int, int]:
    """Everything a refused change must leave alone: versions, labels, releases, the log."""
    return (
        list(PromptVersion.objects.order_by("number").values_list("number", "content_hash")),
        dict(ReleaseLabel.objects.values_list("label", "release__number")),
        Release.objects.count(),
        ReleaseLabelMove.objects.count(),
        AuditEvent.objects.count(),
    )


def _labels() -> dict[str, tuple[int, int]]:
    """Each label's (release number, prompt version number)."""
    return {
        label: (release.number, release.prompt_version.number)
        for label, release in services.release_labels(agent_name=AGENT).items()
    }


def _events(verb: str) -> list[tuple[Any, Any, str]]:
    return list(
        AuditEvent.objects.filter(verb=verb, object_type="prompt", object_id=AGENT)
        .order_by("seq")
        .values_list("before", "after", "actor_label")
    )


def _create(text: str, user: Any, note: str = "a change") -> PromptVersion:
    return prompts.prompt_version_create(agent_name=AGENT, template=text, note=note, user=user)


@pytest.fixture
def careful_model(model_endpoint: Simulator) -> Iterator[Simulator]:
    before = model_endpoint.configure()["mistake_rate"]
    model_endpoint.configure(mistake_rate=0.0)
    yield model_endpoint
    model_endpoint.configure(mistake_rate=before)


# --- the first use -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_first_use_stores_the_code_prompt_as_version_1() -> None:
    v1 = prompts.prompt_version_first(agent_name=AGENT)
    again = prompts.prompt_version_first(agent_name=AGENT)

    assert again.pk == v1.pk
    assert (v1.number, v1.template, v1.content_hash, v1.created_by) == (
        1,
        SYSTEM_PROMPT,
        V1_HASH,
        None,
    )
    assert v1.ref == f"v1-{V1_HASH[:10]}"
    assert PromptVersion.objects.count() == 1
    assert _events("prompt.version_created") == [
        (
            None,
            {
                "number": 1,
                "ref": v1.ref,
                "note": "Declared in code (the agent's system prompt at first use).",
                "content_hash": V1_HASH,
            },
            "system",
        )
    ]
    # Versions alone make no release: labels come with the first use of a release.
    assert (Release.objects.count(), ReleaseLabel.objects.count()) == (0, 0)


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_uses_store_one_version_1() -> None:
    barrier = threading.Barrier(4)
    pks: list[int] = []
    errors: list[BaseException] = []

    def first_use() -> None:
        try:
            barrier.wait()
            pks.append(prompts.prompt_version_first(agent_name=AGENT).pk)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    only = PromptVersion.objects.get()
    assert pks == [only.pk] * 4
    assert len(_events("prompt.version_created")) == 1


def test_the_support_agent_provides_every_placeholder_an_operator_may_use() -> None:
    agent_placeholders = agent_get(AGENT).allowed_placeholders
    ticket = SupportTicketInput(customer_email="a@b.example", subject="s", body="b")

    assert agent_placeholders == {"shop_name", "today"}
    assert set(support_prompt_context(ticket)) == agent_placeholders


# --- canonical text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("a\r\nb", "a\nb\n"),
        ("a\rb\r", "a\nb\n"),
        ("a\n\n\n", "a\n"),
        ("a  \n", "a\n"),
        ("a\n", "a\n"),
    ],
)
def test_the_canonical_form_has_newline_line_ends_and_one_final_newline(
    text: str, canonical: str
) -> None:
    assert prompts.prompt_canonical(template=text) == canonical


@pytest.mark.parametrize(
    ("ref", "number"),
    [("v3-1a2b3c4d5e", 3), ("v12-abc", 12), ("code", None), ("", None), ("vx-1", None)],
)
def test_the_number_in_a_recorded_ref(ref: str, number: int | None) -> None:
    assert prompts.prompt_ref_number(ref) == number


# --- create, diff ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_new_version_is_stored_and_moves_no_label(operator: Any) -> None:
    services.release_labels(agent_name=AGENT)

    # As a browser posts a textarea: \r\n line ends, no final newline.
    v2 = _create(V2_TEXT.replace("\n", "\r\n").rstrip(), operator, note="  Sign off by name ")

    assert (v2.number, v2.note, v2.created_by, v2.template) == (
        2,
        "Sign off by name",
        operator,
        V2_TEXT,
    )
    assert v2.content_hash == hashlib.sha256(V2_TEXT.encode()).hexdigest()
    assert _labels() == {"dev": (1, 1), "staging": (1, 1), "production": (1, 1)}
    assert Release.objects.count() == 1  # a version alone makes no release
    assert _events("prompt.version_created")[-1] == (
        None,
        {
            "number": 2,
            "ref": v2.ref,
            "note": "Sign off by name",
            "content_hash": v2.content_hash,
        },
        "otto",
    )


@pytest.mark.django_db
def test_the_diff_of_two_versions(operator: Any) -> None:
    v1 = prompts.prompt_version_first(agent_name=AGENT)
    text = SYSTEM_PROMPT.replace("## How to work\n", "## How to work (read twice)\n---\n")
    assert text != SYSTEM_PROMPT
    v2 = _create(text, operator)

    diff = prompts.prompt_diff(a=v1, b=v2, context=0)

    assert diff.lines == [
        ("hunk", "@@ -5 +5,2 @@"),
        ("del", "-## How to work"),
        ("add", "+## How to work (read twice)"),
        ("add", "+---"),  # a Markdown rule is a line of the diff, not its file header
    ]
    assert prompts.prompt_diff(a=v2, b=v1, context=0).lines == [
        ("hunk", "@@ -5,2 +5 @@"),
        ("del", "-## How to work (read twice)"),
        ("del", "----"),
        ("add", "+## How to work"),
    ]
    assert not prompts.prompt_diff(a=v2, b=v2).changed


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "The prompt is empty."),
        (" \r\n\t\n", "The prompt is empty."),
        (
            SYSTEM_PROMPT + "Greet $customer_name and $today.\n",
            r"The support agent does not provide \$customer_name; its placeholders are: "
            r"\$shop_name, \$today\.",
        ),
        ("Refunds up to $50 need no reason.\n", r"Line 1: '\$50 need' is not a placeholder"),
        ("Hello\n${shop_name is here", r"Line 2: '\${shop_n' is not a placeholder"),
        (SYSTEM_PROMPT, "Version 1 has exactly this text already"),
        (SYSTEM_PROMPT.replace("\n", "\r\n") + "\r\n\r\n", "Version 1 has exactly this text"),
        ("x" * 100_001, "the limit is 100000"),
    ],
)
def test_an_invalid_template_is_refused_and_nothing_is_saved(
    operator: Any, text: str, message: str
) -> None:
    services.release_labels(agent_name=AGENT)
    before = _state()

    with pytest.raises(PromptRefused, match=message):
        _create(text, operator)

    assert _state() == before


@pytest.mark.django_db
def test_the_same_text_as_an_older_version_is_refused(operator: Any) -> None:
    """Not only dev's or production's text: any stored version's, so a number never
    repeats a content."""
    _create(V2_TEXT, operator)
    _create(SYSTEM_PROMPT + "Keep every reply under 120 words.\n", operator)
    before = _state()

    with pytest.raises(
        PromptRefused,
        match=r"^Version 2 has exactly this text already; nothing to save\. To use it, make a "
        r"release of it\.$",
    ):
        _create(V2_TEXT.replace("\n", "\r\n"), operator)

    assert _state() == before


@pytest.mark.django_db
def test_dollar_dollar_is_a_literal_dollar_sign(operator: Any) -> None:
    v2 = _create("Refunds up to $$50 at $shop_name need no reason.\n", operator)

    agent = agent_get(AGENT)
    ticket = SupportTicketInput(customer_email="a@b.example", subject="s", body="b")
    assert prompts.prompt_render(agent=agent, version=v2, validated_input=ticket) == (
        f"Refunds up to $50 at {SHOP_NAME} need no reason.\n"
    )


# --- concurrency -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_get_consecutive_numbers(operator: Any) -> None:
    prompts.prompt_version_first(agent_name=AGENT)
    texts = [SYSTEM_PROMPT + f"Variant {i}.\n" for i in range(4)]
    barrier = threading.Barrier(len(texts))
    errors: list[BaseException] = []

    def create(text: str) -> None:
        try:
            barrier.wait()
            _create(text, operator)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=create, args=(t,)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(PromptVersion.objects.values_list("number", flat=True)) == [1, 2, 3, 4, 5]
    assert sorted(PromptVersion.objects.exclude(number=1).values_list("template", flat=True)) == (
        sorted(texts)
    )
    assert len(_events("prompt.version_created")) == 5


@pytest.mark.django_db(transaction=True)
def test_two_people_storing_the_same_text_at_once_store_it_once(operator: Any) -> None:
    prompts.prompt_version_first(agent_name=AGENT)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def create() -> None:
        try:
            barrier.wait()
            outcomes.append(f"v{_create(V2_TEXT, operator).number}")
        except PromptRefused as exc:
            outcomes.append(str(exc).split(";")[0])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=create) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # The second waited for the first's lock on version 1, then found the text stored.
    assert sorted(outcomes) == ["Version 2 has exactly this text already", "v2"]
    assert PromptVersion.objects.count() == 2


# --- runs render production's prompt ---------------------------------------------------------


def _rendered(text: str) -> str:
    ticket = SupportTicketInput(customer_email="a@b.example", subject="s", body="b")
    return Template(text).safe_substitute(support_prompt_context(ticket))


@pytest.mark.django_db
def test_a_run_uses_production_s_prompt_and_a_run_in_flight_keeps_its_own(
    careful_model: Simulator, operator: Any, release_manager: Any
) -> None:
    seed_shop()
    old, _ = run_services.run_submit(agent_name=AGENT, run_input=seeded_ticket_input("T-0002"))
    run_services.run_step_execute(run_id=str(old.id), seq=0)  # part way: the first model step
    old.refresh_from_db()
    assert old.state == RunState.RUNNING
    v1 = prompts.prompt_version_get(agent_name=AGENT, number=1)
    assert v1 is not None

    # Prompt v2 travels dev → staging → production (as release 2) while the old run runs.
    v2 = _create(V2_TEXT, operator, note="Sign off by name")
    services.release_try_prompt(agent_name=AGENT, prompt_number=2, user=operator)
    services.release_label_move(agent_name=AGENT, label="staging", number=2, user=operator)
    # Staging alone changes nothing for new runs.
    staged, _ = run_services.run_submit(agent_name=AGENT, run_input=seeded_ticket_input("T-0002"))
    services.release_label_move(
        agent_name=AGENT, label="production", number=2, user=release_manager
    )

    old = drive(old)
    new, _ = run_services.run_submit(agent_name=AGENT, run_input=seeded_ticket_input("T-0002"))
    new = drive(new)

    assert (old.prompt_version, staged.prompt_version, new.prompt_version) == (
        f"v1-{V1_HASH[:10]}",
        v1.ref,
        v2.ref,
    )
    assert (old.release.number, staged.release.number, new.release.number) == (1, 1, 2)
    assert v2.ref == f"v2-{hashlib.sha256(V2_TEXT.encode()).hexdigest()[:10]}"
    assert old.checkpoint["messages"][0] == {"role": "system", "content": _rendered(SYSTEM_PROMPT)}
    assert new.checkpoint["messages"][0] == {"role": "system", "content": _rendered(V2_TEXT)}
    assert "Sign off with the customer's first name" in new.checkpoint["messages"][0]["content"]
    assert f"customer-support agent of {SHOP_NAME}," in new.checkpoint["messages"][0]["content"]
    for run, ref in ((old, v1.ref), (new, v2.ref)):
        assert run.state == RunState.WAITING_FOR_APPROVAL  # the refund waits for a person
        steps = list(run.steps.order_by("seq"))
        assert {step.kind for step in steps} == {StepKind.MODEL, StepKind.TOOL}
        assert [step.prompt_version for step in steps] == [ref] * len(steps)
        submitted = AuditEvent.objects.get(object_id=str(run.id), verb="run.submitted")
        assert submitted.after["prompt_version"] == ref
