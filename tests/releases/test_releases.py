"""Releases and their labels: bootstrap, numbering, moves, promotion through the gate,
rollback of prompt and configuration together, who may move what, races, runs.

A release pins (prompt version, configuration version); dev, staging and production
point at releases; new runs record production's. Every refused change leaves versions,
releases, labels, moves and the audit log as they were.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import connections

from agentdesk.roles import ROLE_PERMISSIONS
from audit.models import AuditEvent
from examples.support.agent import SYSTEM_PROMPT
from examples.support.seed import seed_shop
from releases import configuration, prompts, services
from releases.gate import GateResult
from releases.models import (
    AgentConfigVersion,
    PromptVersion,
    Release,
    ReleaseLabel,
    ReleaseLabelMove,
)
from releases.services import LabelChanged, ReleaseRefused
from reviews.models import Queue
from runs import services as run_services
from runs.models import Run
from tests.runs.factories import seeded_ticket_input

AGENT = "support"
V2_TEXT = SYSTEM_PROMPT + "Sign off with the customer's first name when you know it.\n"
V3_TEXT = SYSTEM_PROMPT + "Keep every reply under 120 words.\n"
# Without a gating dataset an agent's promotions pass, and the move says why
# (tests/evals/test_promotion_gate.py has the gate with one).
GATE = "passed: support has no gating dataset (mark one as gating to gate promotions on an eval)"
STAGING_GATE = "passed: staging takes any release from below"
MOVED = "release.label_moved"


@pytest.fixture(autouse=True)
def _queues(support_queues: None) -> None:
    """Every queue the versions here name exists (see support_queues)."""
    Queue.objects.create(slug="frontline", name="frontline")


@pytest.fixture
def superuser(db: None) -> Any:
    return get_user_model().objects.create_superuser("sam", password="pw")


def _state() -> tuple[Any, ...]:
    """Everything a refused change must leave alone."""
    return (
        list(PromptVersion.objects.order_by("number").values_list("number", flat=True)),
        list(AgentConfigVersion.objects.order_by("number").values_list("number", flat=True)),
        list(
            Release.objects.order_by("number").values_list(
                "number", "prompt_version__number", "config_version__number"
            )
        ),
        sorted(
            ReleaseLabel.objects.values_list("label", "release__number", "moved_by", "moved_at")
        ),
        ReleaseLabelMove.objects.count(),
        AuditEvent.objects.count(),
    )


def _labels() -> dict[str, int]:
    return dict(
        ReleaseLabel.objects.filter(agent_name=AGENT).values_list("label", "release__number")
    )


def _described(release: Release) -> dict[str, Any]:
    """How an audit event describes a release."""
    return {
        "number": release.number,
        "prompt": release.prompt_version.ref,
        "config": release.config_version.number,
        "policy_version": release.config_version.policy_version,
    }


def _events(verb: str) -> list[tuple[Any, Any, str]]:
    return list(
        AuditEvent.objects.filter(verb=verb, object_type="release", object_id=AGENT)
        .order_by("seq")
        .values_list("before", "after", "actor_label")
    )


def _moved(label: str, a: Release, b: Release, kind: str, gate: str, who: str) -> tuple:
    return (
        {"label": label, **_described(a)},
        {"label": label, **_described(b), "kind": kind, "gate": gate},
        who,
    )


def _prompt(text: str, user: Any) -> PromptVersion:
    return prompts.prompt_version_create(agent_name=AGENT, template=text, note="p", user=user)


def _config(user: Any, **changes: Any) -> AgentConfigVersion:
    """A new configuration version: version 1's with the refund threshold lowered."""
    config = copy.deepcopy(configuration.config_version_first(agent_name=AGENT).config)
    config["thresholds"]["issue_refund"] = 0.5
    config.update(changes)
    return configuration.config_version_create(agent_name=AGENT, config=config, note="c", user=user)


def _move(label: str, number: int, user: Any, expected: int | None = None) -> ReleaseLabelMove:
    return services.release_label_move(
        agent_name=AGENT, label=label, number=number, user=user, expected_current=expected
    )


def _release(prompt: int, config: int) -> Release:
    return Release.objects.get(
        agent_name=AGENT, prompt_version__number=prompt, config_version__number=config
    )


@pytest.fixture
def staged(operator: Any) -> Release:
    """Release 2 (prompt v2, config v2) at dev and staging; production at release 1."""
    services.release_labels(agent_name=AGENT)
    _prompt(V2_TEXT, operator)
    _config(operator)
    release = services.release_make(
        agent_name=AGENT, prompt_number=2, config_number=2, user=operator
    )
    _move("dev", release.number, operator)
    _move("staging", release.number, operator)
    return release


def _threads(target: Callable[..., None], args: list[tuple[Any, ...]]) -> None:
    barrier = threading.Barrier(len(args))

    def run(*a: Any) -> None:
        try:
            barrier.wait()
            target(*a)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=a) for a in args]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# --- bootstrap -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_first_use_puts_release_1_of_both_versions_1_under_every_label() -> None:
    labels = services.release_labels(agent_name=AGENT)
    again = services.release_labels(agent_name=AGENT)

    r1 = labels["production"]
    assert {label: r.pk for label, r in labels.items()} == {
        "dev": r1.pk,
        "staging": r1.pk,
        "production": r1.pk,
    }
    assert {label: r.pk for label, r in again.items()} == {label: r1.pk for label in labels}
    assert (r1.number, r1.prompt_version.number, r1.config_version.number, r1.created_by) == (
        1,
        1,
        1,
        None,
    )
    assert (r1.note, Release.objects.count()) == ("The agent's code at first use.", 1)
    assert _events("release.created") == [
        (None, {**_described(r1), "note": "The agent's code at first use."}, "system")
    ]
    assert _events(MOVED) == [
        (
            {"label": label, "number": None},
            {"label": label, **_described(r1), "kind": "initial", "gate": ""},
            "system",
        )
        for label in ("dev", "staging", "production")
    ]
    assert list(
        ReleaseLabelMove.objects.order_by("id").values_list(
            "label", "from_release", "to_release", "kind", "moved_by"
        )
    ) == [(label, None, r1.pk, "initial", None) for label in ("dev", "staging", "production")]
    assert services.release_production(agent_name=AGENT) == r1
    assert services.config_active(agent_name=AGENT) == r1.config_version


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_uses_make_one_release_and_three_labels() -> None:
    numbers: list[int] = []
    errors: list[BaseException] = []

    def first_use() -> None:
        try:
            numbers.append(services.release_production(agent_name=AGENT).number)
        except BaseException as exc:  # reported below
            errors.append(exc)

    _threads(first_use, [()] * 4)

    assert (errors, numbers) == ([], [1, 1, 1, 1])
    assert (PromptVersion.objects.count(), AgentConfigVersion.objects.count()) == (1, 1)
    assert (Release.objects.count(), ReleaseLabel.objects.count()) == (1, 3)
    assert ReleaseLabelMove.objects.filter(kind="initial").count() == 3
    assert (len(_events("release.created")), len(_events(MOVED))) == (1, 3)


# --- releases: one per pair ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_pair_gets_the_next_number_once_and_keeps_it(operator: Any) -> None:
    r1 = services.release_production(agent_name=AGENT)
    p2 = _prompt(V2_TEXT, operator)
    c2 = _config(operator)

    r2 = services.release_for(
        prompt_version=p2, config_version=r1.config_version, user=operator, note="  try  "
    )
    r3 = services.release_make(agent_name=AGENT, prompt_number=2, config_number=2, user=operator)
    again = services.release_make(
        agent_name=AGENT, prompt_number=2, config_number=2, user=operator, note="other"
    )
    first = services.release_for(
        prompt_version=r1.prompt_version, config_version=r1.config_version, user=operator
    )

    assert [(r.number, r.prompt_version, r.config_version) for r in (r2, r3)] == [
        (2, p2, r1.config_version),
        (3, p2, c2),
    ]
    assert (again.pk, again.note, first.pk) == (r3.pk, "", r1.pk)
    assert r2.note == "try"
    assert _events("release.created")[1:] == [
        (None, {**_described(r2), "note": "try"}, "otto"),
        (None, {**_described(r3), "note": ""}, "otto"),
    ]
    assert _labels() == {"dev": 1, "staging": 1, "production": 1}  # making moves no label


@pytest.mark.django_db
def test_making_a_release_is_refused_for_missing_versions_or_another_agent(
    operator: Any, auditor: Any
) -> None:
    services.release_labels(agent_name=AGENT)
    other = AgentConfigVersion.objects.create(
        agent_name="billing", number=1, config={}, policy_version="x"
    )
    before = _state()

    with pytest.raises(ReleaseRefused, match=r"^support has no prompt version 9\.$"):
        services.release_make(agent_name=AGENT, prompt_number=9, config_number=1, user=operator)
    with pytest.raises(ReleaseRefused, match=r"^support has no configuration version 9\.$"):
        services.release_make(agent_name=AGENT, prompt_number=1, config_number=9, user=operator)
    with pytest.raises(ReleaseRefused, match=r"^A release pairs versions of one agent\.$"):
        services.release_for(
            prompt_version=PromptVersion.objects.get(number=1), config_version=other, user=None
        )
    with pytest.raises(PermissionDenied, match=r"releases\.change_release"):
        services.release_make(agent_name=AGENT, prompt_number=1, config_number=1, user=auditor)

    assert _state() == before


@pytest.mark.django_db(transaction=True)
def test_concurrent_asks_for_one_pair_make_one_release_and_new_pairs_get_consecutive_numbers(
    operator: Any,
) -> None:
    services.release_labels(agent_name=AGENT)
    for text in (V2_TEXT, V3_TEXT):
        _prompt(text, operator)
    got: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def make(prompt_number: int) -> None:
        try:
            release = services.release_make(
                agent_name=AGENT, prompt_number=prompt_number, config_number=1, user=operator
            )
            got.append((prompt_number, release.number))
        except BaseException as exc:  # reported below
            errors.append(exc)

    _threads(make, [(2,), (2,), (2,), (3,), (3,)])

    assert errors == []
    releases = dict(Release.objects.values_list("prompt_version__number", "number"))
    assert sorted(releases.values()) == [1, 2, 3]
    assert sorted(got) == sorted((p, releases[p]) for p, _ in got)
    assert len(_events("release.created")) == 3


# --- moves: dev anywhere, staging and production by promotion or rollback ---------------------


@pytest.mark.django_db
def test_promote_through_the_labels_then_roll_production_back(
    operator: Any, release_manager: Any
) -> None:
    r1 = services.release_production(agent_name=AGENT)
    _prompt(V2_TEXT, operator)
    _config(operator)
    r2 = services.release_make(agent_name=AGENT, prompt_number=2, config_number=2, user=operator)

    assert _move("dev", 2, operator).kind == "move"
    assert _labels() == {"dev": 2, "staging": 1, "production": 1}
    assert _move("staging", 2, operator).kind == "promotion"
    assert _labels() == {"dev": 2, "staging": 2, "production": 1}
    assert _move("production", 2, release_manager).kind == "promotion"
    assert _labels() == {"dev": 2, "staging": 2, "production": 2}
    assert services.release_production(agent_name=AGENT) == r2
    assert services.release_label_previous(agent_name=AGENT, label="production") == [r1]

    assert _move("production", 1, release_manager).kind == "rollback"
    assert _move("staging", 1, operator).kind == "rollback"
    assert _labels() == {"dev": 2, "staging": 1, "production": 1}
    assert (PromptVersion.objects.count(), Release.objects.count()) == (2, 2)

    assert _events(MOVED)[3:] == [
        _moved("dev", r1, r2, "move", "", "otto"),
        _moved("staging", r1, r2, "promotion", STAGING_GATE, "otto"),
        _moved("production", r1, r2, "promotion", GATE, "rhea"),
        _moved("production", r2, r1, "rollback", "", "rhea"),
        _moved("staging", r2, r1, "rollback", "", "otto"),
    ]
    moves = ReleaseLabelMove.objects.filter(label="production").order_by("id")
    assert [(m.from_release_id, m.to_release_id, m.kind, m.gate, m.moved_by) for m in moves] == [
        (None, r1.pk, "initial", "", None),
        (r1.pk, r2.pk, "promotion", GATE, release_manager),
        (r2.pk, r1.pk, "rollback", "", release_manager),
    ]
    row = ReleaseLabel.objects.get(agent_name=AGENT, label="production")
    assert (row.release, row.moved_by, row.moved_at) == (r1, release_manager, moves[2].moved_at)


@pytest.mark.django_db
def test_dev_may_point_at_any_release_and_moving_it_back_is_a_move(operator: Any) -> None:
    services.release_labels(agent_name=AGENT)
    _prompt(V2_TEXT, operator)
    _prompt(V3_TEXT, operator)
    for number in (2, 3):
        services.release_make(
            agent_name=AGENT, prompt_number=number, config_number=1, user=operator
        )

    kinds = [_move("dev", n, operator).kind for n in (3, 2, 1, 3)]

    assert kinds == ["move", "move", "move", "move"]
    assert _labels() == {"dev": 3, "staging": 1, "production": 1}


@pytest.mark.django_db
def test_trying_a_prompt_points_dev_at_it_with_dev_s_configuration(operator: Any) -> None:
    services.release_labels(agent_name=AGENT)
    _prompt(V2_TEXT, operator)
    _config(operator)
    dev_release = services.release_make(
        agent_name=AGENT, prompt_number=1, config_number=2, user=operator
    )
    _move("dev", dev_release.number, operator)

    move = services.release_try_prompt(agent_name=AGENT, prompt_number=2, user=operator)

    assert (move.kind, move.from_release, move.to_release) == ("move", dev_release, _release(2, 2))
    assert _labels() == {"dev": 3, "staging": 1, "production": 1}
    before = _state()
    with pytest.raises(ReleaseRefused, match=r"^dev already uses prompt version 2\.$"):
        services.release_try_prompt(agent_name=AGENT, prompt_number=2, user=operator)
    with pytest.raises(ReleaseRefused, match=r"^support has no prompt version 9\.$"):
        services.release_try_prompt(agent_name=AGENT, prompt_number=9, user=operator)
    with pytest.raises(LabelChanged, match="dev moved to release 3 after you looked"):
        services.release_try_prompt(
            agent_name=AGENT, prompt_number=1, user=operator, expected_current=2
        )
    assert _state() == before


@pytest.mark.django_db
def test_staging_and_production_only_take_a_promotion_or_a_rollback(
    operator: Any, release_manager: Any
) -> None:
    services.release_labels(agent_name=AGENT)
    _prompt(V2_TEXT, operator)
    _prompt(V3_TEXT, operator)
    for number in (2, 3):
        services.release_make(
            agent_name=AGENT, prompt_number=number, config_number=1, user=operator
        )
    _move("dev", 3, operator)
    before = _state()

    # Release 2 is neither at dev nor where staging has been.
    with pytest.raises(
        ReleaseRefused,
        match=r"^staging can move only to the release dev points at \(release 3\), or back to "
        r"a release it pointed at before \(none\); not to release 2\.$",
    ):
        _move("staging", 2, operator)
    # Production cannot skip staging.
    with pytest.raises(
        ReleaseRefused,
        match=r"^production can move only to the release staging points at \(release 1\), or "
        r"back to a release it pointed at before \(none\); not to release 3\.$",
    ):
        _move("production", 3, release_manager)
    assert _state() == before

    # Once staging had release 3 and moved on, it may go back there.
    _move("staging", 3, operator)
    _move("dev", 2, operator)
    _move("staging", 2, operator)
    assert _move("staging", 3, operator).kind == "rollback"
    # Where it has been, its initial release included; not where it is.
    assert services.release_label_previous(agent_name=AGENT, label="staging") == [
        _release(2, 1),
        _release(1, 1),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("label", "number", "message"),
    [
        ("qa", 1, r"^There is no label 'qa'; the labels are dev, staging, production\.$"),
        ("Production", 1, r"^There is no label 'Production'"),
        ("dev", 9, r"^support has no release 9\.$"),
        ("dev", 1, r"^dev already points at release 1\.$"),
        ("production", 1, r"^production already points at release 1\.$"),
    ],
)
def test_an_impossible_move_is_refused_and_nothing_is_saved(
    superuser: Any, label: str, number: int, message: str
) -> None:
    services.release_labels(agent_name=AGENT)
    before = _state()

    with pytest.raises(ReleaseRefused, match=message):
        _move(label, number, superuser)

    assert _state() == before


@pytest.mark.django_db
def test_a_move_confirmed_against_a_release_the_label_left_is_refused(
    operator: Any, staged: Release
) -> None:
    before = _state()

    with pytest.raises(
        LabelChanged,
        match=r"^staging moved to release 2 after you looked \(you confirmed against release "
        r"1\)\. Check the change against it and confirm again\.$",
    ):
        _move("staging", 1, operator, expected=1)

    assert _state() == before
    assert _move("staging", 1, operator, expected=2).kind == "rollback"


@pytest.mark.django_db
def test_a_target_naming_a_queue_deleted_since_is_refused(operator: Any) -> None:
    services.release_labels(agent_name=AGENT)
    _config(operator, escalation_queue="frontline")
    services.release_make(agent_name=AGENT, prompt_number=1, config_number=2, user=operator)
    Queue.objects.filter(slug="frontline").delete()
    before = _state()

    with pytest.raises(ReleaseRefused, match="frontline"):
        _move("dev", 2, operator)

    assert _state() == before


# --- the gate ---------------------------------------------------------------------------------


@pytest.fixture
def gate_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, str]]:
    """Every call of the promotion gate, which passes."""
    calls: list[tuple[int, str, str]] = []

    def gate(*, release: Release, label: str, kind: str) -> GateResult:
        calls.append((release.number, label, kind))
        return GateResult(passed=True, reason="eval 0.97")

    monkeypatch.setattr(services, "promotion_gate", gate)
    return calls


@pytest.mark.django_db
def test_promotions_ask_the_gate_and_record_its_answer_and_rollbacks_do_not(
    operator: Any, release_manager: Any, staged: Release, gate_calls: list[Any]
) -> None:
    promotion = _move("production", 2, release_manager)
    _move("production", 1, release_manager)
    _move("dev", 1, operator)

    assert gate_calls == [(2, "production", "promotion")]
    assert promotion.gate == "eval 0.97"
    assert _events(MOVED)[-3][1]["gate"] == "eval 0.97"


@pytest.mark.django_db
@pytest.mark.parametrize("label", ["staging", "production"])
def test_a_failing_gate_refuses_the_promotion_and_saves_nothing(
    operator: Any,
    release_manager: Any,
    monkeypatch: pytest.MonkeyPatch,
    label: str,
) -> None:
    services.release_labels(agent_name=AGENT)
    _prompt(V2_TEXT, operator)
    services.release_make(agent_name=AGENT, prompt_number=2, config_number=1, user=operator)
    _move("dev", 2, operator)
    if label == "production":
        _move("staging", 2, operator)
    asked: list[tuple[int, str, str]] = []

    def gate(*, release: Release, label: str, kind: str) -> GateResult:
        asked.append((release.number, label, kind))
        return GateResult(False, "eval failed")

    monkeypatch.setattr(services, "promotion_gate", gate)
    before = _state()
    events = len(_events(MOVED))

    with pytest.raises(
        ReleaseRefused, match=rf"^Release 2 may not be moved to {label}: eval failed$"
    ):
        _move(label, 2, release_manager)

    assert asked == [(2, label, "promotion")]
    assert _state() == before
    assert len(_events(MOVED)) == events


# --- who may move which label ----------------------------------------------------------------


def test_operators_do_not_hold_the_production_permission_release_managers_do() -> None:
    production = "releases.promote_production_release"
    assert "releases.change_release" in ROLE_PERMISSIONS["operator"]
    assert production not in ROLE_PERMISSIONS["operator"]
    assert "releases.change_release" not in ROLE_PERMISSIONS["auditor"]
    assert production not in ROLE_PERMISSIONS["auditor"]
    assert "releases.view_release" in ROLE_PERMISSIONS["auditor"]
    assert production in ROLE_PERMISSIONS["release_manager"]
    assert "releases.change_release" in ROLE_PERMISSIONS["release_manager"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("persona", "dev", "production"),
    [
        ("auditor", False, False),
        ("reviewer", False, False),
        ("outsider", False, False),
        ("operator", True, False),
        ("release_manager", True, True),
        ("superuser", True, True),
    ],
)
def test_who_may_move_which_label(
    request: pytest.FixtureRequest, staged: Release, persona: str, dev: bool, production: bool
) -> None:
    user = request.getfixturevalue(persona)
    outcomes = {}
    denials = []
    for label, number in (("dev", 1), ("production", 2)):
        before = _state()
        try:
            _move(label, number, user)
            outcomes[label] = True
        except PermissionDenied as exc:
            denials.append((label, str(exc), _state() == before))
            outcomes[label] = False

    needs = {"dev": "change_release", "production": "promote_production_release"}
    assert denials == [
        (label, f"moving the {label} label needs the releases.{needs[label]} permission", True)
        for label, allowed in (("dev", dev), ("production", production))
        if not allowed
    ]
    assert outcomes == {"dev": dev, "production": production}
    assert _labels() == {"dev": 1 if dev else 2, "staging": 2, "production": 2 if production else 1}


@pytest.mark.django_db
def test_without_permission_nothing_is_made_or_tried(auditor: Any, staged: Release) -> None:
    before = _state()

    with pytest.raises(PermissionDenied):
        services.release_try_prompt(agent_name=AGENT, prompt_number=1, user=auditor)
    with pytest.raises(PermissionDenied):
        services.release_activate_config(agent_name=AGENT, number=2, user=auditor)

    assert _state() == before


# --- concurrency -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_promotions_move_production_once(
    release_manager: Any, superuser: Any, staged: Release
) -> None:
    outcomes: list[str] = []

    def promote(user: Any) -> None:
        try:
            outcomes.append(_move("production", 2, user).kind)
        except ReleaseRefused as exc:
            outcomes.append(str(exc))

    _threads(promote, [(release_manager,), (superuser,)])

    # The second waited for the first's lock, then saw production at release 2 already.
    assert sorted(outcomes) == ["production already points at release 2.", "promotion"]
    production = [e for e in _events(MOVED) if e[1]["label"] == "production"]
    assert [(b["number"], a["number"]) for b, a, _ in production] == [(None, 1), (1, 2)]
    assert ReleaseLabelMove.objects.filter(label="production", kind="promotion").count() == 1
    assert _labels()["production"] == 2


@pytest.mark.django_db(transaction=True)
def test_two_people_moving_dev_from_what_they_saw_take_turns(
    operator: Any, superuser: Any, staged: Release
) -> None:
    services.release_try_prompt(agent_name=AGENT, prompt_number=1, user=operator)  # release 3
    outcomes: list[tuple[int, str]] = []

    def point(user: Any, number: int) -> None:
        try:
            outcomes.append((number, _move("dev", number, user, expected=3).kind))
        except LabelChanged as exc:
            outcomes.append((number, type(exc).__name__))

    _threads(point, [(operator, 1), (superuser, 2)])

    winner = next(number for number, outcome in outcomes if outcome == "move")
    assert sorted(outcome for _, outcome in outcomes) == ["LabelChanged", "move"]
    assert _labels()["dev"] == winner
    dev = [e for e in _events(MOVED) if e[1]["label"] == "dev"]
    # Each event names the release it really replaced: exactly one move from release 3.
    assert [(b["number"], a["number"]) for b, a, _ in dev[-1:]] == [(3, winner)]
    assert ReleaseLabelMove.objects.filter(label="dev", from_release__number=3).count() == 1


# --- activating a configuration: production with another configuration ------------------------


@pytest.mark.django_db
def test_activating_a_configuration_moves_production_through_the_gate_and_back_is_a_rollback(
    operator: Any, gate_calls: list[Any]
) -> None:
    r1 = services.release_production(agent_name=AGENT)
    c2 = _config(operator)

    activation = services.release_activate_config(agent_name=AGENT, number=2, user=operator)
    r2 = _release(1, 2)
    rollback = services.release_activate_config(agent_name=AGENT, number=1, user=operator)
    again = services.release_activate_config(agent_name=AGENT, number=2, user=None)

    assert [(m.kind, m.to_release, m.gate) for m in (activation, rollback, again)] == [
        ("activation", r2, "eval 0.97"),
        ("rollback", r1, ""),
        ("rollback", r2, ""),  # release 2 served before: back to it is a rollback
    ]
    assert r2.config_version == c2
    assert gate_calls == [(2, "production", "activation")]
    assert _labels() == {"dev": 1, "staging": 1, "production": 2}
    assert _events(MOVED)[3:] == [
        _moved("production", r1, r2, "activation", "eval 0.97", "otto"),
        _moved("production", r2, r1, "rollback", "", "otto"),
        _moved("production", r1, r2, "rollback", "", "system"),
    ]


@pytest.mark.django_db
def test_an_activation_is_refused_by_the_gate_a_deleted_queue_or_a_stale_confirmation(
    operator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    services.release_labels(agent_name=AGENT)
    _config(operator)
    _config(operator, escalation_queue="frontline")
    Queue.objects.filter(slug="frontline").delete()
    monkeypatch.setattr(services, "promotion_gate", lambda **_: GateResult(False, "eval failed"))
    before = _state()
    events = AuditEvent.objects.count()

    with pytest.raises(ReleaseRefused, match=r"^Release 2 may not be moved to production: eval"):
        services.release_activate_config(agent_name=AGENT, number=2, user=operator)
    with pytest.raises(ReleaseRefused, match="frontline"):
        services.release_activate_config(agent_name=AGENT, number=3, user=operator)
    with pytest.raises(LabelChanged, match=r"^Version 1 was activated after you looked"):
        services.release_activate_config(
            agent_name=AGENT, number=2, user=operator, expected_active=2
        )

    # Each refusal rolls back its transaction: not even the release of the pair is kept.
    assert _state() == before
    assert AuditEvent.objects.count() == events


# --- runs record their release ----------------------------------------------------------------


def _submit() -> Run:
    run, _ = run_services.run_submit(agent_name=AGENT, run_input=seeded_ticket_input("T-0002"))
    return Run.objects.select_related("release", "config_version").get(pk=run.pk)


def _recorded(run: Run) -> tuple[int | None, str, int | None]:
    release = run.release
    config = run.config_version
    return (
        release.number if release else None,
        run.prompt_version,
        config.number if config else None,
    )


@pytest.mark.django_db
def test_a_rollback_of_production_restores_its_prompt_and_configuration_for_new_runs(
    release_manager: Any, staged: Release
) -> None:
    seed_shop()
    r1 = services.release_production(agent_name=AGENT)
    _move("production", 2, release_manager)
    promoted = _submit()

    _move("production", 1, release_manager)
    rolled_back = _submit()

    assert _recorded(promoted) == (2, staged.prompt_version.ref, 2)
    assert _recorded(rolled_back) == (1, r1.prompt_version.ref, 1)
    assert rolled_back.prompt_version == PromptVersion.objects.get(number=1).ref
    assert configuration.config_version_first(agent_name=AGENT) == rolled_back.config_version


@pytest.mark.django_db
def test_a_run_in_flight_keeps_its_release_when_production_moves(
    operator: Any, release_manager: Any, staged: Release
) -> None:
    seed_shop()
    r1 = services.release_production(agent_name=AGENT)
    in_flight = _submit()

    _move("production", 2, release_manager)
    services.release_activate_config(agent_name=AGENT, number=1, user=operator)  # release 3
    later = _submit()

    in_flight = Run.objects.select_related("release", "config_version").get(pk=in_flight.pk)
    assert _recorded(in_flight) == (1, r1.prompt_version.ref, 1)
    assert _recorded(later) == (3, staged.prompt_version.ref, 1)
    assert _release(2, 1).number == 3
