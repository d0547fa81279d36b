"""The eval pages: the list with its chart and the form to run one, an eval's progress and
scores, two evals side by side and one example across them. Who may see them, who may
start one, and what a stranger gets."""

from __future__ import annotations

from typing import Any

import pytest

from evals import datasets, runner
from evals.models import Eval
from releases import services
from tests.evals.test_gate import AGENT, EXAMPLES, _example, scored_eval
from tests.releases.pages import client_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _inline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_send_examples", lambda ids: None)


@pytest.fixture
def version(support_queues: None) -> Any:
    return datasets.dataset_create(
        agent_name=AGENT, name="golden", user=None, examples=[_example(i) for i in range(EXAMPLES)]
    )


@pytest.fixture
def two(version: Any) -> tuple[Eval, Eval]:
    """A baseline that got everything right and a candidate that missed three."""
    release = services.release_production(agent_name=AGENT)
    return scored_eval(release, version), scored_eval(release, version, wrong=3)


def test_the_list_charts_finished_evals_and_an_operator_starts_one(
    two: tuple[Eval, Eval], operator: Any
) -> None:
    client = client_for(operator)
    body = client.get(f"/evals/{AGENT}/evals/").content.decode()
    assert "Scores per release over time" in body
    assert body.count("<polyline") == 2  # tool selection and argument match were measured
    assert f'href="/evals/{AGENT}/evals/{two[1].pk}/"' in body
    assert "0.850" in body  # the candidate's tool selection, in the table beside the chart

    response = client.post(
        f"/evals/{AGENT}/evals/new", {"release": "production", "dataset": "golden"}
    )
    started = Eval.objects.order_by("-pk").first()
    assert started is not None
    assert response.status_code == 302
    assert response["Location"] == f"/evals/{AGENT}/evals/{started.pk}/"
    assert (started.total, started.done, started.created_by) == (EXAMPLES, 0, operator)


def test_a_bad_release_or_dataset_is_named_and_starts_nothing(version: Any, operator: Any) -> None:
    response = client_for(operator).post(
        f"/evals/{AGENT}/evals/new", {"release": "42", "dataset": "golden@9"}
    )
    body = response.content.decode()
    assert response.status_code == 400
    assert "support has no release 42" in body
    assert "has no version 9" in body
    assert not Eval.objects.exists()


@pytest.mark.parametrize(
    ("who", "view", "start"),
    [("operator", 200, 302), ("auditor", 200, 403), ("reviewer", 403, 403), ("outsider", 403, 403)],
)
def test_who_sees_and_who_starts(
    version: Any, request: pytest.FixtureRequest, who: str, view: int, start: int
) -> None:
    client = client_for(request.getfixturevalue(who))
    assert client.get(f"/evals/{AGENT}/evals/").status_code == view
    response = client.post(f"/evals/{AGENT}/evals/new", {"release": "1", "dataset": "golden"})
    assert response.status_code == start
    assert Eval.objects.count() == (1 if start == 302 else 0)


def test_a_stranger_is_sent_to_log_in_and_unknown_things_are_404(
    two: tuple[Eval, Eval], operator: Any
) -> None:
    anonymous = client_for(None).get(f"/evals/{AGENT}/evals/")
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/login/")
    client = client_for(operator)
    baseline, candidate = two
    assert client.get("/evals/nobody/evals/").status_code == 404
    assert client.get(f"/evals/{AGENT}/evals/999999/").status_code == 404
    assert client.get(f"/evals/{AGENT}/evals/{candidate.pk}/against/999999/").status_code == 404
    assert (
        client.get(f"/evals/{AGENT}/evals/{candidate.pk}/against/{baseline.pk}/99/").status_code
        == 404
    )


def test_an_eval_shows_its_progress_then_its_scores(version: Any, operator: Any) -> None:
    evaluation = runner.eval_start(
        release=services.release_production(agent_name=AGENT), dataset_version=version, user=None
    )
    client = client_for(operator)
    running = client.get(f"/evals/{AGENT}/evals/{evaluation.pk}/").content.decode()
    assert 'role="progressbar"' in running
    assert 'hx-trigger="every 2s"' in running
    part = client.get(
        f"/evals/{AGENT}/evals/{evaluation.pk}/?part=progress", HTTP_HX_REQUEST="true"
    ).content.decode()
    assert part.lstrip().startswith('<div id="eval-progress"')
    assert "<html" not in part

    finished = scored_eval(services.release_production(agent_name=AGENT), version, wrong=1)
    body = client.get(f"/evals/{AGENT}/evals/{finished.pk}/").content.decode()
    assert "hx-trigger" not in body.split('id="eval-progress"')[1].split(">")[0]
    assert "Tool selection" in body
    assert "0.950" in body
    assert body.count("<tr>") >= EXAMPLES


def test_two_evals_side_by_side_and_one_example_across_them(
    two: tuple[Eval, Eval], auditor: Any
) -> None:
    baseline, candidate = two
    client = client_for(auditor)
    body = client.get(
        f"/evals/{AGENT}/evals/{candidate.pk}/against/{baseline.pk}/"
    ).content.decode()
    assert "Regressed (3)" in body
    assert "Improved (0)" in body
    assert "-15.0" in body  # tool selection, in points
    assert f'href="/evals/{AGENT}/evals/{candidate.pk}/against/{baseline.pk}/0/"' in body

    diff = client.get(
        f"/evals/{AGENT}/evals/{candidate.pk}/against/{baseline.pk}/0/"
    ).content.decode()
    assert "SO-1000" in diff  # what was expected
    assert "<code>send_reply</code>" in diff  # what the candidate did
    assert "<code>lookup_order</code>" in diff  # what the baseline did
    assert "score-down" in diff


def test_evals_of_different_dataset_versions_are_not_compared(
    two: tuple[Eval, Eval], version: Any, operator: Any
) -> None:
    newer = datasets.dataset_add(
        dataset=version.dataset, examples=[_example(50)], user=None, note=""
    )
    other = scored_eval(services.release_production(agent_name=AGENT), newer)
    response = client_for(operator).get(f"/evals/{AGENT}/evals/{other.pk}/against/{two[0].pk}/")
    assert response.status_code == 302
    assert response["Location"] == f"/evals/{AGENT}/evals/{other.pk}/"


def test_a_release_manager_saves_a_judge_version_and_an_operator_only_reads(
    operator: Any, release_manager: Any
) -> None:
    from evals.judge import judge_current
    from evals.models import JudgePrompt

    page = f"/evals/{AGENT}/judge/"
    body = client_for(operator).get(page).content.decode()
    assert "v1 <span" in body  # the code's judge, made on first use
    assert 'id="judge-new"' not in body
    assert (
        client_for(operator).post(page + "new", {"template": "x", "model": "m"}).status_code == 403
    )

    manager = client_for(release_manager)
    same = manager.post(
        page + "new",
        {
            "template": judge_current(agent_name=AGENT).template,
            "model": "gpt-4o-mini",
            "endpoint": "default",
        },
    )
    assert same.status_code == 400
    assert "That is the current judge already." in same.content.decode()
    unknown = manager.post(
        page + "new", {"template": "Grade it.", "model": "m", "endpoint": "nowhere"}
    )
    assert "There is no endpoint alias &#x27;nowhere&#x27;." in unknown.content.decode()
    assert JudgePrompt.objects.count() == 1

    saved = manager.post(
        page + "new",
        {
            "template": "Grade strictly.",
            "model": "gpt-4o",
            "endpoint": "default",
            "note": "stricter",
        },
    )
    assert saved.status_code == 302
    assert judge_current(agent_name=AGENT).number == 2
    assert judge_current(agent_name=AGENT).created_by == release_manager


def test_numbers_past_what_a_column_holds_are_not_found(version: Any, operator: Any) -> None:
    response = client_for(operator).post(
        f"/evals/{AGENT}/evals/new", {"release": "9" * 15, "dataset": "golden@" + "9" * 15}
    )
    body = response.content.decode()
    assert response.status_code == 400
    assert f"support has no release {'9' * 15}" in body
    assert f"has no version {'9' * 15}" in body
