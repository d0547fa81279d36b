"""The eval runner: every example of a dataset version against a release, in a sandbox.

Most tests drive the examples in this process (the runner's functions, then the
sandboxed run's steps), so each path is seen step by step; one runs the whole eval on
real Celery workers. Model calls go through the simulator over loopback HTTP.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from audit.models import AuditEvent
from evals import datasets, runner
from evals.models import Eval, EvalResult, EvalState, ResultStatus
from examples.support.models import Cancellation, Handoff, Refund, Reply
from examples.support.seed import seed_shop
from releases.services import release_production
from reviews.models import ApprovalRequest
from runs.models import Action, ActionStatus, Run, RunPurpose, RunState
from runs.selectors import run_list_visible
from tests.conftest import wait_until
from tests.processes import Simulator, WorkerPool
from tests.runs.factories import drive, seeded_ticket_input

AGENT = "support"


@pytest.fixture
def shop(transactional_db: None, support_queues: None) -> None:
    seed_shop()


@pytest.fixture
def inline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No example goes to the broker: the test runs each one itself."""
    monkeypatch.setattr(runner, "_send_examples", lambda ids: None)


def _order_of(ticket: str) -> str:
    found = re.search(r"SO-\d{4}", seeded_ticket_input(ticket)["body"])
    assert found, ticket
    return found.group(0)


def _first_messages(ticket: str) -> list[dict[str, Any]]:
    """The conversation a run of ``ticket`` starts with (its system prompt, the ticket)."""
    run = _live_run_checkpoint(ticket)
    return run["messages"][:2]


def _live_run_checkpoint(ticket: str) -> dict[str, Any]:
    from runs import services

    run, _ = services.run_submit(
        agent_name=AGENT, run_input=seeded_ticket_input(ticket), idempotency_key=f"msgs-{ticket}"
    )
    return run.checkpoint


def step_example(ticket: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "step",
        "id": f"lookup-{ticket}",
        "messages": _first_messages(ticket),
        "input": seeded_ticket_input(ticket),
        "expected_calls": [
            {"tool": "lookup_order", "arguments": {"order_id": {"value": _order_of(ticket)}}}
        ],
        "expected_policy": {"outcome": "execute"},
        **extra,
    }


def task_example(ticket: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "task",
        "id": f"task-{ticket}",
        "input": seeded_ticket_input(ticket),
        "expected_calls": [
            {"tool": "lookup_order", "arguments": {"order_id": {"value": _order_of(ticket)}}}
        ],
        "end_state": {"state": "succeeded"},
        "rubric": "- the refund is confirmed\n- the customer got a reply",
        **extra,
    }


def _dataset(examples: list[dict[str, Any]]) -> Any:
    return datasets.dataset_create(agent_name=AGENT, name="golden", user=None, examples=examples)


def _run_inline(evaluation: Eval) -> Eval:
    """Every example, in this process: step examples at once, task examples' runs driven."""
    for result in EvalResult.objects.filter(eval=evaluation).order_by("index"):
        runner.eval_example_run(result_id=result.pk)
        result.refresh_from_db()
        if result.run_id is not None:
            drive(Run.objects.get(pk=result.run_id))
            runner.eval_task_score(result_id=result.pk)
    evaluation.refresh_from_db()
    return evaluation


def test_an_eval_scores_both_levels_and_nothing_reaches_the_world(
    shop: None, model_endpoint: Simulator, inline: None
) -> None:
    model_endpoint.configure(mistake_rate=0)
    version = _dataset([step_example("T-0002"), task_example("T-0002"), task_example("T-0003")])
    side_effects = (Refund, Reply, Cancellation, Handoff)
    before = {model.__name__: model.objects.count() for model in side_effects}
    requests_before = ApprovalRequest.objects.count()

    evaluation = runner.eval_start(
        release=release_production(agent_name=AGENT), dataset_version=version, user=None
    )
    evaluation = _run_inline(evaluation)

    assert (evaluation.state, evaluation.done, evaluation.total) == (EvalState.FINISHED, 3, 3)
    results = {r.example_id: r for r in EvalResult.objects.filter(eval=evaluation)}
    step = results["lookup-T-0002"]
    assert step.status == ResultStatus.SCORED
    assert step.scores == {"tool_selection": 1.0, "argument_match": 1.0, "policy_match": 1.0}
    assert step.calls[0]["tool"] == "lookup_order"
    assert step.calls[0]["policy"] == "execute"
    assert step.tokens_in > 0
    assert step.steps == 1

    task = results["task-T-0002"]
    assert task.status == ResultStatus.SCORED, task.error
    assert task.scores["task_completion"] == 1.0
    assert task.scores["judge"] == 1.0, (task.judge, task.answer)
    assert task.judge["verdict"] == "pass"
    run = Run.objects.get(pk=task.run_id)
    assert run.purpose == RunPurpose.EVAL
    assert run.state == RunState.SUCCEEDED
    assert task.steps == run.next_seq
    assert task.cost_usd >= run.cost_usd

    # Write tools never ran: each was answered by the sandbox, and no side-effect table,
    # no reviewer's queue changed (T-0003 is a refund the policy sends to two reviewers).
    writes = Action.objects.filter(
        run__purpose=RunPurpose.EVAL, tool__in=["issue_refund", "send_reply"]
    )
    assert writes.exists()
    assert all(a.result["sandbox"] is True for a in writes if a.status == ActionStatus.SUCCEEDED)
    reviewed = Action.objects.get(run_id=results["task-T-0003"].run_id, tool="issue_refund")
    assert (reviewed.verdict, reviewed.subject) == ("review", "")  # judged, counted nowhere
    assert {model.__name__: model.objects.count() for model in side_effects} == before
    assert ApprovalRequest.objects.count() == requests_before

    metrics = evaluation.metrics["metrics"]
    assert metrics["tool_selection"] == {"mean": 1.0, "n": 1}
    assert metrics["task_completion"]["n"] == 2
    assert evaluation.metrics["errors"] == 0
    assert evaluation.cost_usd == sum(r.cost_usd for r in results.values())
    verbs = list(
        AuditEvent.objects.filter(object_type="eval", object_id=str(evaluation.pk))
        .order_by("seq")
        .values_list("verb", flat=True)
    )
    assert verbs == ["eval.started", "eval.finished"]


def test_sandboxed_runs_are_not_in_the_runs_list(
    shop: None, model_endpoint: Simulator, inline: None, operator: Any
) -> None:
    version = _dataset([step_example("T-0002"), task_example("T-0002")])  # one live run too
    evaluation = _run_inline(
        runner.eval_start(
            release=release_production(agent_name=AGENT), dataset_version=version, user=None
        )
    )
    eval_run = EvalResult.objects.get(eval=evaluation, kind="task").run_id
    listed = set(run_list_visible(user=operator).values_list("pk", flat=True))
    assert eval_run not in listed
    assert Run.objects.filter(purpose=RunPurpose.LIVE).count() == len(listed) > 0


def test_a_failing_model_is_that_examples_error_and_the_eval_still_finishes(
    shop: None, model_endpoint: Simulator, inline: None, settings: Any
) -> None:
    version = _dataset([step_example("T-0002"), step_example("T-0005", id="lookup-2")])
    settings.AGENTDESK_RETRY_ATTEMPTS = 1
    evaluation = runner.eval_start(
        release=release_production(agent_name=AGENT), dataset_version=version, user=None
    )
    first, second = EvalResult.objects.filter(eval=evaluation).order_by("index")
    runner.eval_example_run(result_id=first.pk)
    model_endpoint.configure(server_error_rate=1.0)
    runner.eval_example_run(result_id=second.pk)

    evaluation.refresh_from_db()
    second.refresh_from_db()
    assert evaluation.state == EvalState.FINISHED
    assert second.status == ResultStatus.ERROR
    assert second.error["class"] == "model_server_error"
    assert second.scores == {"tool_selection": 0.0, "argument_match": 0.0, "policy_match": 0.0}
    assert evaluation.metrics["errors"] == 1
    assert evaluation.metrics["metrics"]["tool_selection"] == {"mean": 0.5, "n": 2}


def test_an_example_delivered_twice_counts_once(
    shop: None, model_endpoint: Simulator, inline: None
) -> None:
    version = _dataset([step_example("T-0002"), task_example("T-0002")])
    evaluation = runner.eval_start(
        release=release_production(agent_name=AGENT), dataset_version=version, user=None
    )
    step, task = EvalResult.objects.filter(eval=evaluation).order_by("index")
    runner.eval_example_run(result_id=step.pk)
    runner.eval_example_run(result_id=step.pk)
    runner.eval_example_run(result_id=task.pk)
    runner.eval_example_run(result_id=task.pk)  # the run exists: no second one
    assert Run.objects.filter(purpose=RunPurpose.EVAL).count() == 1
    task.refresh_from_db()
    drive(Run.objects.get(pk=task.run_id))
    runner.eval_task_score(result_id=task.pk)
    runner.eval_task_score(result_id=task.pk)
    evaluation.refresh_from_db()
    assert (evaluation.done, evaluation.state) == (2, EvalState.FINISHED)
    assert (
        AuditEvent.objects.filter(verb="eval.finished", object_id=str(evaluation.pk)).count() == 1
    )


def test_an_eval_is_refused_for_another_agents_dataset_or_an_empty_one(
    shop: None, inline: None
) -> None:
    empty = datasets.dataset_create(agent_name=AGENT, name="empty", user=None, examples=[])
    with pytest.raises(runner.EvalRefused, match="holds no examples"):
        runner.eval_start(
            release=release_production(agent_name=AGENT), dataset_version=empty, user=None
        )
    assert not Eval.objects.exists()


@pytest.mark.slow
def test_an_eval_runs_on_real_workers(
    shop: None, model_endpoint: Simulator, workers: WorkerPool
) -> None:
    version = _dataset(
        [step_example("T-0002"), step_example("T-0005", id="lookup-5"), task_example("T-0002")]
    )
    workers.start(1, concurrency=2)
    evaluation = runner.eval_start(
        release=release_production(agent_name=AGENT), dataset_version=version, user=None
    )
    wait_until(
        lambda: Eval.objects.get(pk=evaluation.pk).state == EvalState.FINISHED,
        timeout_s=90,
        what="the eval to finish",
        describe=lambda: list(
            EvalResult.objects.filter(eval=evaluation).values("index", "status", "error")
        ),
    )
    evaluation.refresh_from_db()
    assert evaluation.metrics["errors"] == 0
    assert evaluation.metrics["metrics"]["task_completion"] == {"mean": 1.0, "n": 1}
    assert evaluation.cost_usd > Decimal(0)
