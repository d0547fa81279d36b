"""Prompt versions: create, diff, labels (promote, roll back), who may move them, runs."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from string import Template
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import connections

from agentdesk.models import PromptLabel, PromptLabelMove, PromptVersion
from agentdesk.roles import ROLE_PERMISSIONS
from agents.registry import agent_get
from audit.models import AuditEvent
from examples.support.agent import SYSTEM_PROMPT, SupportTicketInput, support_prompt_context
from examples.support.policy_text import SHOP_NAME
from examples.support.seed import seed_shop
from releases import prompts
from releases.prompts import GateResult, PromptRefused
from runs import services as run_services
from runs.models import RunState, StepKind
from tests.processes import Simulator
from tests.runs.factories import drive, seeded_ticket_input

AGENT = "support"
V1_HASH = hashlib.sha256(SYSTEM_PROMPT.encode()).hexdigest()
V2_TEXT = SYSTEM_PROMPT + "Sign off with the customer's first name when you know it.\n"
V3_TEXT = SYSTEM_PROMPT + "Keep every reply under 120 words.\n"


def _state() -> tuple[list[tuple[int, str]], dict[str, int], int, int]:
    """Everything a refused change must leave alone: versions, labels, moves, the log."""
    return (
        list(PromptVersion.objects.order_by("number").values_list("number", "content_hash")),
        dict(PromptLabel.objects.values_list("label", "version__number")),
        PromptLabelMove.objects.count(),
        AuditEvent.objects.count(),
    )


def _labels() -> dict[str, int]:
    return {
        label: version.number for label, version in prompts.prompt_labels(agent_name=AGENT).items()
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


@pytest.fixture
def superuser(db: None) -> Any:
    return get_user_model().objects.create_superuser("sam", password="pw")


# --- bootstrap -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_first_use_stores_the_code_prompt_as_version_1_under_every_label() -> None:
    labels = prompts.prompt_labels(agent_name=AGENT)
    again = prompts.prompt_labels(agent_name=AGENT)

    v1 = labels["production"]
    assert {label: v.pk for label, v in labels.items()} == {
        "dev": v1.pk,
        "staging": v1.pk,
        "production": v1.pk,
    }
    assert again == labels
    assert (v1.number, v1.template, v1.content_hash, v1.created_by) == (
        1,
        SYSTEM_PROMPT,
        V1_HASH,
        None,
    )
    assert v1.ref == f"v1-{V1_HASH[:10]}"
    assert PromptVersion.objects.count() == 1
    assert [(b, a["number"], who) for b, a, who in _events("prompt.version_created")] == [
        (None, 1, "system")
    ]
    assert _events("prompt.label_moved") == [
        (
            {"label": label, "number": None, "ref": None},
            {"label": label, "number": 1, "ref": v1.ref, "kind": "initial", "gate": ""},
            "system",
        )
        for label in ("dev", "staging", "production")
    ]


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_uses_store_one_version_1() -> None:
    barrier = threading.Barrier(4)
    numbers: list[int] = []

    def first_use() -> None:
        try:
            barrier.wait()
            numbers.append(prompts.prompt_production(agent_name=AGENT).number)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert numbers == [1, 1, 1, 1]
    assert PromptVersion.objects.count() == 1
    assert PromptLabel.objects.count() == 3
    assert len(_events("prompt.version_created")) == 1
    assert len(_events("prompt.label_moved")) == 3


def test_the_support_agent_provides_every_placeholder_an_operator_may_use() -> None:
    agent_placeholders = agent_get(AGENT).allowed_placeholders
    ticket = SupportTicketInput(customer_email="a@b.example", subject="s", body="b")

    assert agent_placeholders == {"shop_name", "today"}
    assert set(support_prompt_context(ticket)) == agent_placeholders


# --- create, diff ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_new_version_is_stored_and_moves_no_label(operator: Any) -> None:
    prompts.prompt_labels(agent_name=AGENT)

    # As a browser posts a textarea: \r\n line ends, no final newline.
    v2 = _create(V2_TEXT.replace("\n", "\r\n").rstrip(), operator, note="  Sign off by name ")

    assert (v2.number, v2.note, v2.created_by, v2.template) == (
        2,
        "Sign off by name",
        operator,
        V2_TEXT,
    )
    assert v2.content_hash == hashlib.sha256(V2_TEXT.encode()).hexdigest()
    assert _labels() == {"dev": 1, "staging": 1, "production": 1}
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
    v1 = prompts.prompt_production(agent_name=AGENT)
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
    prompts.prompt_labels(agent_name=AGENT)
    before = _state()

    with pytest.raises(PromptRefused, match=message):
        _create(text, operator)

    assert _state() == before


@pytest.mark.django_db
def test_dollar_dollar_is_a_literal_dollar_sign(operator: Any) -> None:
    v2 = _create("Refunds up to $$50 at $shop_name need no reason.\n", operator)

    agent = agent_get(AGENT)
    ticket = SupportTicketInput(customer_email="a@b.example", subject="s", body="b")
    assert prompts.prompt_render(agent=agent, version=v2, validated_input=ticket) == (
        f"Refunds up to $50 at {SHOP_NAME} need no reason.\n"
    )


# --- labels ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_promote_through_the_labels_then_roll_production_back(
    operator: Any, release_manager: Any
) -> None:
    v1 = prompts.prompt_production(agent_name=AGENT)
    v2 = _create(V2_TEXT, operator)

    def move(label: str, number: int, user: Any) -> str:
        return prompts.prompt_label_move(
            agent_name=AGENT, label=label, number=number, user=user
        ).kind

    assert move("dev", 2, operator) == "move"
    assert _labels() == {"dev": 2, "staging": 1, "production": 1}
    assert move("staging", 2, operator) == "promotion"
    assert _labels() == {"dev": 2, "staging": 2, "production": 1}
    assert move("production", 2, release_manager) == "promotion"
    assert _labels() == {"dev": 2, "staging": 2, "production": 2}
    assert prompts.prompt_production(agent_name=AGENT) == v2

    assert move("production", 1, release_manager) == "rollback"
    assert _labels() == {"dev": 2, "staging": 2, "production": 1}
    assert move("staging", 1, operator) == "rollback"
    assert _labels() == {"dev": 2, "staging": 1, "production": 1}
    assert PromptVersion.objects.count() == 2  # moves create no version

    gate = "passed: no eval gate configured yet"
    assert _events("prompt.label_moved")[3:] == [
        (
            {"label": "dev", "number": 1, "ref": v1.ref},
            {"label": "dev", "number": 2, "ref": v2.ref, "kind": "move", "gate": ""},
            "otto",
        ),
        (
            {"label": "staging", "number": 1, "ref": v1.ref},
            {"label": "staging", "number": 2, "ref": v2.ref, "kind": "promotion", "gate": gate},
            "otto",
        ),
        (
            {"label": "production", "number": 1, "ref": v1.ref},
            {"label": "production", "number": 2, "ref": v2.ref, "kind": "promotion", "gate": gate},
            "rhea",
        ),
        (
            {"label": "production", "number": 2, "ref": v2.ref},
            {"label": "production", "number": 1, "ref": v1.ref, "kind": "rollback", "gate": ""},
            "rhea",
        ),
        (
            {"label": "staging", "number": 2, "ref": v2.ref},
            {"label": "staging", "number": 1, "ref": v1.ref, "kind": "rollback", "gate": ""},
            "otto",
        ),
    ]
    moves = PromptLabelMove.objects.filter(label="production").order_by("id")
    assert [(m.from_version_id, m.to_version_id, m.kind, m.moved_by) for m in moves] == [
        (None, v1.pk, "initial", None),
        (v1.pk, v2.pk, "promotion", release_manager),
        (v2.pk, v1.pk, "rollback", release_manager),
    ]


@pytest.mark.django_db
def test_staging_and_production_only_take_a_promotion_or_a_rollback(
    operator: Any, release_manager: Any
) -> None:
    prompts.prompt_labels(agent_name=AGENT)
    _create(V2_TEXT, operator)
    _create(V3_TEXT, operator)
    prompts.prompt_label_move(agent_name=AGENT, label="dev", number=3, user=operator)
    before = _state()

    # v2 was never at dev's position when staging moved, nor ever at staging.
    with pytest.raises(
        PromptRefused,
        match=r"staging can move only to the version dev points at \(v3\), or back to a "
        r"version it pointed at before \(none\); not to version 2\.",
    ):
        prompts.prompt_label_move(agent_name=AGENT, label="staging", number=2, user=operator)
    # Production cannot skip staging.
    with pytest.raises(PromptRefused, match=r"production can move only to the version staging"):
        prompts.prompt_label_move(
            agent_name=AGENT, label="production", number=3, user=release_manager
        )
    assert _state() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("label", "number", "message"),
    [
        ("qa", 1, r"There is no label 'qa'; the labels are dev, staging, production\."),
        ("Production", 1, r"There is no label 'Production'"),
        ("dev", 9, r"support has no prompt version 9\."),
        ("dev", 1, r"dev already points at version 1\."),
        ("production", 1, r"production already points at version 1\."),
    ],
)
def test_an_impossible_move_is_refused_and_nothing_is_saved(
    superuser: Any, label: str, number: int, message: str
) -> None:
    prompts.prompt_labels(agent_name=AGENT)
    before = _state()

    with pytest.raises(PromptRefused, match=message):
        prompts.prompt_label_move(agent_name=AGENT, label=label, number=number, user=superuser)

    assert _state() == before


@pytest.mark.django_db
def test_a_failing_gate_refuses_the_promotion_and_saves_nothing(
    operator: Any, release_manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts.prompt_labels(agent_name=AGENT)
    _create(V2_TEXT, operator)
    prompts.prompt_label_move(agent_name=AGENT, label="dev", number=2, user=operator)
    asked: list[tuple[str, int, str]] = []

    def gate(*, agent_name: str, version: PromptVersion, label: str) -> GateResult:
        asked.append((agent_name, version.number, label))
        return GateResult(passed=False, reason="the eval scored 0.62, below 0.90")

    monkeypatch.setattr(prompts, "prompt_promotion_gate", gate)
    before = _state()

    with pytest.raises(
        PromptRefused,
        match=r"Version 2 may not be promoted to staging: the eval scored 0\.62, below 0\.90",
    ):
        prompts.prompt_label_move(agent_name=AGENT, label="staging", number=2, user=operator)

    assert asked == [("support", 2, "staging")]
    assert _state() == before


# --- who may move which label ----------------------------------------------------------------


def test_operators_do_not_hold_the_production_permission_release_managers_do() -> None:
    assert "agentdesk.promote_production_prompt" not in ROLE_PERMISSIONS["operator"]
    assert "agentdesk.promote_production_prompt" not in ROLE_PERMISSIONS["auditor"]
    assert "agentdesk.promote_production_prompt" in ROLE_PERMISSIONS["release_manager"]


@pytest.mark.django_db
def test_an_operator_may_move_dev_and_staging_but_not_production(operator: Any) -> None:
    prompts.prompt_labels(agent_name=AGENT)
    _create(V2_TEXT, operator)
    prompts.prompt_label_move(agent_name=AGENT, label="dev", number=2, user=operator)
    prompts.prompt_label_move(agent_name=AGENT, label="staging", number=2, user=operator)
    before = _state()

    with pytest.raises(PermissionDenied, match="promote_production_prompt"):
        prompts.prompt_label_move(agent_name=AGENT, label="production", number=2, user=operator)

    assert _state() == before
    assert _labels() == {"dev": 2, "staging": 2, "production": 1}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("persona", "dev", "production"),
    [
        ("auditor", False, False),
        ("reviewer", False, False),
        ("operator", True, False),
        ("release_manager", True, True),
        ("superuser", True, True),
    ],
)
def test_who_may_move_which_label(
    request: pytest.FixtureRequest, operator: Any, persona: str, dev: bool, production: bool
) -> None:
    user = request.getfixturevalue(persona)
    prompts.prompt_labels(agent_name=AGENT)
    _create(V2_TEXT, operator)
    # Staging at v2 by an operator, so production has a promotion to make.
    prompts.prompt_label_move(agent_name=AGENT, label="dev", number=2, user=operator)
    prompts.prompt_label_move(agent_name=AGENT, label="staging", number=2, user=operator)

    outcomes = {}
    for label, number in (("dev", 1), ("production", 2)):
        try:
            prompts.prompt_label_move(agent_name=AGENT, label=label, number=number, user=user)
            outcomes[label] = True
        except PermissionDenied:
            outcomes[label] = False

    assert outcomes == {"dev": dev, "production": production}
    assert _labels() == {"dev": 1 if dev else 2, "staging": 2, "production": 2 if production else 1}


# --- concurrency -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_promotions_move_production_once(
    operator: Any, release_manager: Any, superuser: Any
) -> None:
    prompts.prompt_labels(agent_name=AGENT)
    _create(V2_TEXT, operator)
    prompts.prompt_label_move(agent_name=AGENT, label="dev", number=2, user=operator)
    prompts.prompt_label_move(agent_name=AGENT, label="staging", number=2, user=operator)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def promote(user: Any) -> None:
        try:
            barrier.wait()
            move = prompts.prompt_label_move(
                agent_name=AGENT, label="production", number=2, user=user
            )
            outcomes.append(move.kind)
        except PromptRefused as exc:
            outcomes.append(str(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=promote, args=(u,)) for u in (release_manager, superuser)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # The second waited for the first's lock, then saw production at v2 already.
    assert sorted(outcomes) == ["production already points at version 2.", "promotion"]
    promotions = [e for e in _events("prompt.label_moved") if e[1]["label"] == "production"]
    assert [(b["number"], a["number"]) for b, a, _ in promotions] == [(None, 1), (1, 2)]
    assert PromptLabelMove.objects.filter(label="production", kind="promotion").count() == 1
    assert _labels()["production"] == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_get_consecutive_numbers(operator: Any) -> None:
    prompts.prompt_labels(agent_name=AGENT)
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


# --- runs record their version ---------------------------------------------------------------


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
    v1 = prompts.prompt_production(agent_name=AGENT)

    # v2 travels dev → staging → production while the old run is in flight.
    v2 = _create(V2_TEXT, operator, note="Sign off by name")
    prompts.prompt_label_move(agent_name=AGENT, label="dev", number=2, user=operator)
    prompts.prompt_label_move(agent_name=AGENT, label="staging", number=2, user=operator)
    # Staging alone changes nothing for new runs.
    staged, _ = run_services.run_submit(agent_name=AGENT, run_input=seeded_ticket_input("T-0002"))
    prompts.prompt_label_move(agent_name=AGENT, label="production", number=2, user=release_manager)

    old = drive(old)
    new, _ = run_services.run_submit(agent_name=AGENT, run_input=seeded_ticket_input("T-0002"))
    new = drive(new)

    assert (old.prompt_version, staged.prompt_version, new.prompt_version) == (
        f"v1-{V1_HASH[:10]}",
        v1.ref,
        v2.ref,
    )
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
