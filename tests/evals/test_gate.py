"""The regression gate (``manage.py eval gate``) and the promotion gate it backs: a release
goes to production only with a passing, recent eval of that exact release on the agent's
gating dataset, or by an override a separate permission allows, with a reason, audited."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit.models import AuditEvent
from evals import datasets, runner
from evals.gate import GateRules, gate_report
from evals.models import Dataset, Eval, EvalResult
from evals.scoring import step_scores
from releases import configuration, prompts, services
from releases.models import Release
from releases.services import ReleaseRefused

pytestmark = pytest.mark.django_db

AGENT = "support"
EXAMPLES = 20


def _example(i: int) -> dict[str, Any]:
    return {
        "kind": "step",
        "id": f"e{i}",
        "messages": [{"role": "user", "content": f"Where is order SO-10{i:02d}?"}],
        "expected_calls": [
            {"tool": "lookup_order", "arguments": {"order_id": {"value": f"SO-10{i:02d}"}}}
        ],
    }


@pytest.fixture
def gating(support_queues: None) -> Any:
    version = datasets.dataset_create(
        agent_name=AGENT,
        name="gating",
        user=None,
        examples=[_example(i) for i in range(EXAMPLES)],
    )
    Dataset.objects.filter(pk=version.dataset_id).update(gating=True)
    return version


@pytest.fixture
def staged(operator: Any, support_queues: None) -> Release:
    """Release 2 (a new prompt and configuration) at dev and staging; production at 1."""
    services.release_labels(agent_name=AGENT)
    prompts.prompt_version_create(
        agent_name=AGENT,
        template=prompts.prompt_version_first(agent_name=AGENT).template + "\nBe brief.",
        note="p",
        user=operator,
    )
    config = dict(configuration.config_version_first(agent_name=AGENT).config)
    configuration.config_version_create(
        agent_name=AGENT, config={**config, "sla_minutes": 30}, note="c", user=operator
    )
    release = services.release_make(
        agent_name=AGENT, prompt_number=2, config_number=2, user=operator
    )
    for label in ("dev", "staging"):
        services.release_label_move(
            agent_name=AGENT, label=label, number=release.number, user=operator
        )
    return release


def scored_eval(release: Release, version: Any, *, wrong: int = 0) -> Eval:
    """A finished eval of ``release`` whose first ``wrong`` examples picked another tool.

    Recorded through the runner's own writer, as a worker would, without a model: the
    calls are given, so the scores are known.
    """
    evaluation = runner.eval_start(release=release, dataset_version=version, user=None)
    for result in EvalResult.objects.filter(eval=evaluation).order_by("index"):
        example = version.examples[result.index]
        call = runner.Call(
            "send_reply" if result.index < wrong else "lookup_order",
            {"order_id": f"SO-10{result.index:02d}"},
        )
        runner._result_record(
            result,
            example,
            scores=step_scores(example, [call]),
            calls=[call.as_json()],
            answer="",
            usage=runner.ModelUsage(),
            steps=1,
        )
    evaluation.refresh_from_db()
    return evaluation


@pytest.fixture(autouse=True)
def _inline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_send_examples", lambda ids: None)


def _production(user: Any, number: int, **extra: Any) -> Any:
    return services.release_label_move(
        agent_name=AGENT, label="production", number=number, user=user, **extra
    )


# --- the gate's rules ----------------------------------------------------------------------


def test_a_regression_beyond_the_allowance_or_a_floor_fails_the_gate(
    gating: Any, staged: Release
) -> None:
    production = services.release_production(agent_name=AGENT)
    baseline = scored_eval(production, gating)
    candidate = scored_eval(staged, gating, wrong=1)  # 95 %: five points down
    rules = GateRules.of(gating.dataset)

    report = gate_report(candidate, baseline=baseline, rules=rules)
    assert not report.passed
    assert report.problems == [
        "tool_selection fell 5.0 points against the baseline (allowed: 2)",
        "argument_match fell 5.0 points against the baseline (allowed: 2)",
    ]
    row = next(r for r in report.rows if r.metric == "tool_selection")
    assert (row.value, row.baseline, row.delta_points, row.status) == (0.95, 1.0, -5.0, "regressed")

    assert gate_report(
        candidate, baseline=baseline, rules=GateRules.of(gating.dataset, allowance_points=5)
    ).passed
    floored = gate_report(
        candidate,
        baseline=None,
        rules=GateRules.of(gating.dataset, floors={"tool_selection": 0.97}),
    )
    assert floored.problems == ["tool_selection 0.950 is below its floor 0.970"]
    with pytest.raises(ValueError, match="unknown metric"):
        GateRules.of(gating.dataset, floors={"accuracy": 0.9})


def test_the_ci_gate_exits_by_its_verdict_and_writes_a_report(
    gating: Any, staged: Release, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scored_eval(services.release_production(agent_name=AGENT), gating)
    args = ["eval", "gate", "--agent", AGENT, "--release", "staging", "--dataset", "gating"]

    with pytest.raises(CommandError) as missing:
        call_command(*args)
    assert missing.value.returncode == 2
    assert "has no finished eval" in str(missing.value)
    assert "eval run --agent support --release 2 --dataset gating" in str(missing.value)

    scored_eval(staged, gating, wrong=1)
    report = tmp_path / "gate.xml"
    with pytest.raises(CommandError) as failed:
        call_command(*args, "--baseline", "production", "--report", str(report))
    assert failed.value.returncode == 1
    out = capsys.readouterr().out
    assert "tool_selection" in out
    assert "regressed" in out
    assert "FAIL" in out
    suite = ET.parse(report).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("3", "3")  # 2 metrics + the gate
    failing = [case.get("name") for case in suite if case.find("failure") is not None]
    assert failing == ["tool_selection", "argument_match", "gate"]

    json_report = tmp_path / "gate.json"
    call_command(
        *args, "--baseline", "production", "--allowance", "5", "--report", str(json_report)
    )
    assert json.loads(json_report.read_text())["passed"] is True

    for bad, message in (
        (["--release", "nine"], "neither a release number nor a label"),
        (["--dataset", "gating@7"], "has no version 7"),
        (["--floor", "tool_selection=high"], "write METRIC=VALUE"),
    ):
        with pytest.raises(CommandError, match=message) as refused:
            call_command(*args, *bad)
        assert refused.value.returncode == 2


def test_eval_run_starts_an_eval_and_says_so(
    gating: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    call_command(
        "eval",
        "run",
        "--agent",
        AGENT,
        "--release",
        "production",
        "--dataset",
        "gating",
        "--no-wait",
    )
    evaluation = Eval.objects.get()
    assert (
        f"eval {evaluation.pk}: release 1 on support/gating@1, {EXAMPLES} examples"
        in capsys.readouterr().out
    )
    with pytest.raises(CommandError, match="has no dataset 'nope'"):
        call_command("eval", "run", "--agent", AGENT, "--release", "1", "--dataset", "nope")


# --- the promotion gate --------------------------------------------------------------------


def test_production_refuses_a_release_without_a_passing_recent_eval(
    gating: Any, staged: Release, release_manager: Any
) -> None:
    with pytest.raises(
        ReleaseRefused, match="has no finished eval on the gating dataset gating"
    ) as refused:
        _production(release_manager, staged.number)
    assert "python manage.py eval run --agent support --release 2 --dataset gating" in str(
        refused.value
    )

    production = services.release_production(agent_name=AGENT)
    scored_eval(production, gating)
    failing = scored_eval(staged, gating, wrong=2)
    with pytest.raises(ReleaseRefused, match=r"tool_selection fell 10\.0 points"):
        _production(release_manager, staged.number)

    passing = scored_eval(staged, gating)  # the latest counts: a pass after the failure
    Eval.objects.filter(pk=failing.pk).update(finished_at=timezone.now() - timedelta(days=9))
    Eval.objects.filter(pk=passing.pk).update(finished_at=timezone.now() - timedelta(days=8))
    with pytest.raises(ReleaseRefused, match="older than 7 days"):
        _production(release_manager, staged.number)
    assert services.release_production(agent_name=AGENT).number == 1  # nothing moved

    Eval.objects.filter(pk=passing.pk).update(finished_at=timezone.now())
    move = _production(release_manager, staged.number)
    assert move.gate.startswith(f"passed: eval {passing.pk} passed against eval ")
    assert services.release_production(agent_name=AGENT) == staged


def test_an_eval_of_an_older_dataset_version_does_not_count(
    gating: Any, staged: Release, release_manager: Any
) -> None:
    scored_eval(staged, gating)
    datasets.dataset_add(dataset=gating.dataset, examples=[_example(99)], user=None, note="")
    with pytest.raises(ReleaseRefused, match="has no finished eval"):
        _production(release_manager, staged.number)


def test_a_configuration_activation_is_gated_too(gating: Any, operator: Any) -> None:
    config = dict(configuration.config_version_first(agent_name=AGENT).config)
    configuration.config_version_create(
        agent_name=AGENT, config={**config, "sla_minutes": 45}, note="c", user=operator
    )
    with pytest.raises(ReleaseRefused, match="has no finished eval"):
        services.release_activate_config(agent_name=AGENT, number=2, user=operator)
    assert services.config_active(agent_name=AGENT).number == 1


def test_an_override_needs_its_own_permission_and_a_reason_and_is_audited(
    gating: Any, staged: Release, release_manager: Any
) -> None:
    with pytest.raises(PermissionDenied, match="override_promotion_gate"):
        _production(release_manager, staged.number, override_reason="hotfix for a pricing bug")
    release_manager.user_permissions.add(Permission.objects.get(codename="override_promotion_gate"))
    release_manager = type(release_manager).objects.get(pk=release_manager.pk)  # fresh perms
    with pytest.raises(ReleaseRefused, match="has no finished eval"):
        _production(release_manager, staged.number, override_reason="   ")
    assert services.release_production(agent_name=AGENT).number == 1

    move = _production(release_manager, staged.number, override_reason="hotfix for a pricing bug")
    assert move.gate.startswith(
        f"overridden by {release_manager.username}: hotfix for a pricing bug"
    )
    event = AuditEvent.objects.get(verb="release.gate_overridden")
    assert event.actor == release_manager
    assert event.after["reason"] == "hotfix for a pricing bug"
    assert event.after["release"] == staged.number
    assert "has no finished eval" in event.after["gate"]


def test_without_a_gating_dataset_promotions_pass_and_say_why(
    staged: Release, release_manager: Any
) -> None:
    move = _production(release_manager, staged.number)
    assert move.gate == (
        "passed: support has no gating dataset (mark one as gating to gate promotions on an eval)"
    )


# --- the release page ----------------------------------------------------------------------


def test_the_release_page_says_what_the_gate_says_and_offers_the_override(
    gating: Any, staged: Release, release_manager: Any
) -> None:
    from tests.releases.pages import client_for

    client = client_for(release_manager)
    body = client.get("/releases/support/").content.decode()
    assert "The gate refuses it now: release 2 has no finished eval" in body
    assert 'href="/evals/support/evals/">Run the eval</a>' in body
    assert "Promote release 2 from staging" not in body  # no override permission: no button
    refused = client.post(
        "/releases/support/move", {"label": "production", "number": 2, "expected_current": 1}
    )
    assert refused.status_code == 302
    assert services.release_production(agent_name=AGENT).number == 1

    release_manager.user_permissions.add(Permission.objects.get(codename="override_promotion_gate"))
    body = client.get("/releases/support/").content.decode()
    assert "Override and promote release 2 from staging" in body
    client.post(
        "/releases/support/move",
        {
            "label": "production",
            "number": 2,
            "expected_current": 1,
            "override_reason": "the eval workers are down; hotfix",
        },
    )
    assert services.release_production(agent_name=AGENT).number == 2
    assert AuditEvent.objects.get(verb="release.gate_overridden").after["reason"] == (
        "the eval workers are down; hotfix"
    )

    scored_eval(staged, gating)  # now production is release 2; nothing left to promote
    assert "The gate refuses" not in client.get("/releases/support/").content.decode()


# --- who may change the gate -----------------------------------------------------------------


def test_a_gate_is_set_by_an_operator_and_loosened_only_with_the_override(
    support_queues: None, operator: Any
) -> None:
    from tests.releases.pages import client_for

    version = datasets.dataset_create(
        agent_name=AGENT, name="golden", user=None, examples=[_example(0)]
    )
    client = client_for(operator)
    page = f"/evals/{AGENT}/datasets/golden/"
    response = client.post(
        page + "gate",
        {"gating": "on", "floors": '{"tool_selection": 0.9}', "allowance_points": "1"},
    )
    assert response.status_code == 302
    dataset = Dataset.objects.get(pk=version.dataset_id)
    assert (dataset.gating, dataset.gate) == (
        True,
        {"floors": {"tool_selection": 0.9}, "allowance_points": 1.0},
    )
    event = AuditEvent.objects.get(verb="dataset.gate_changed")
    assert event.after == {"gating": "golden", "gate": dataset.gate}
    assert "This dataset gates support's promotions" in client.get(page).content.decode()

    # Loosening (here: taking the gate away) is refused without the override, and changes nothing.
    assert client.post(page + "gate", {"floors": "", "allowance_points": ""}).status_code == 403
    dataset.refresh_from_db()
    assert dataset.gating is True
    bad = client.post(page + "gate", {"gating": "on", "floors": '{"accuracy": 2}'})
    assert bad.status_code == 302  # refused by the service, with its reason
    dataset.refresh_from_db()
    assert dataset.gate["floors"] == {"tool_selection": 0.9}

    operator.user_permissions.add(Permission.objects.get(codename="override_promotion_gate"))
    client.post(page + "gate", {"floors": "", "allowance_points": ""})
    dataset.refresh_from_db()
    assert (dataset.gating, dataset.gate) == (False, {})
    assert AuditEvent.objects.filter(verb="dataset.gate_changed").count() == 2


def test_an_auditor_may_not_touch_the_gate(gating: Any, auditor: Any) -> None:
    from tests.releases.pages import client_for

    response = client_for(auditor).post(f"/evals/{AGENT}/datasets/gating/gate", {})
    assert response.status_code == 403
    assert Dataset.objects.get(pk=gating.dataset_id).gating is True


def test_an_activation_refused_by_the_gate_may_be_overridden_from_its_page(
    gating: Any, operator: Any
) -> None:
    from tests.releases.pages import client_for

    config = dict(configuration.config_version_first(agent_name=AGENT).config)
    configuration.config_version_create(
        agent_name=AGENT, config={**config, "sla_minutes": 45}, note="c", user=operator
    )
    client = client_for(operator)
    page = f"/agents/{AGENT}/versions/2/activate"
    assert "override it" not in client.get(page).content.decode()
    form = {"confirm": "True", "expected_active": "1", "expected_release": "1"}
    client.post(page, {**form, "override_reason": "ignored without the permission"})
    assert services.config_active(agent_name=AGENT).number == 1

    operator.user_permissions.add(Permission.objects.get(codename="override_promotion_gate"))
    assert "override it" in client.get(page).content.decode()
    client.post(page, {**form, "override_reason": "a queue name fix, nothing a model sees"})
    assert services.config_active(agent_name=AGENT).number == 2
    assert AuditEvent.objects.get(verb="release.gate_overridden").after["kind"] == "activation"


def test_a_pass_without_a_baseline_says_it_checked_floors_only(
    gating: Any, staged: Release, release_manager: Any
) -> None:
    passing = scored_eval(staged, gating)  # production has no eval on this version
    move = _production(release_manager, staged.number)
    assert move.gate == (
        f"passed: eval {passing.pk} passed (floors only: no baseline eval on this dataset "
        "version) on gating"
    )
