"""``manage.py eval run --inline``: an eval run in the command's own process, no workers.

The examples come from the seeded shop (examples.support.golden builds them as the demo's
dataset does); model calls go to the simulator over loopback HTTP.
"""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from agents.registry import agent_get
from evals import datasets, runner
from evals.models import DatasetVersion, Eval, EvalState
from examples.support import golden
from examples.support.models import Ticket
from examples.support.seed import seed_shop
from releases import configuration, prompts, services
from releases.models import Release
from tests.processes import Simulator

pytestmark = pytest.mark.django_db(transaction=True)

AGENT = "support"
TICKETS = ("T-0001", "T-0002", "T-0008", "T-0050")


@pytest.fixture
def version(transactional_db: None, support_queues: None) -> DatasetVersion:
    """Four first-call examples and one whole run, from the seeded tickets."""
    seed_shop()
    agent = agent_get(AGENT)
    prompt = services.release_production(agent_name=AGENT).prompt_version
    tickets = {t.ticket_id: t for t in Ticket.objects.filter(ticket_id__in=TICKETS)}
    examples = [golden.step_example(tickets[t], agent=agent, prompt=prompt) for t in TICKETS]
    examples.append(golden.task_example(tickets["T-0001"], golden.TASKS["T-0001"]))
    return datasets.dataset_create(agent_name=AGENT, name="smoke", user=None, examples=examples)


@pytest.fixture
def never_queued(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What the runner sends to the broker: nothing, when the command runs inline."""
    sent: list[Any] = []
    monkeypatch.setattr(runner, "_send_examples", sent.append)
    return sent


def _run(*extra: str) -> str:
    out = StringIO()
    call_command(
        "eval", "run", "--agent", AGENT, "--dataset", "smoke", *extra, "--inline", stdout=out
    )
    return out.getvalue()


def test_run_inline_finishes_the_eval_and_prints_its_metrics(
    version: DatasetVersion, model_endpoint: Simulator, never_queued: list[Any]
) -> None:
    model_endpoint.configure(mistake_rate=0)

    output = _run("--release", "production")

    evaluation = Eval.objects.get()
    assert (evaluation.state, evaluation.done, evaluation.total) == (EvalState.FINISHED, 5, 5)
    assert never_queued == []
    metrics = evaluation.metrics["metrics"]
    assert metrics["tool_selection"]["mean"] == 1.0
    lines = output.splitlines()
    assert lines[0] == (f"eval {evaluation.pk}: release 1 on {version.dataset}@1, 5 examples")
    assert lines[1] == f"  eval {evaluation.pk}: running 5 inline"
    assert lines[2] == (
        f"eval {evaluation.pk}: 5 examples, {evaluation.metrics['errors']} errors, "
        f"cost ${evaluation.cost_usd}"
    )
    assert evaluation.metrics["errors"] == 0
    assert "  tool_selection     1.000  (n=4)" in lines
    assert "  argument_match     1.000  (n=4)" in lines
    assert "  task_completion    1.000  (n=1)" in lines
    assert "against" not in output


def _staged(user: Any) -> Release:
    """Release 2: production's configuration with a longer prompt."""
    services.release_labels(agent_name=AGENT)
    prompts.prompt_version_create(
        agent_name=AGENT,
        template=prompts.prompt_version_first(agent_name=AGENT).template + "\nBe brief.",
        note="p",
        user=user,
    )
    return services.release_make(
        agent_name=AGENT,
        prompt_number=2,
        config_number=configuration.config_version_first(agent_name=AGENT).number,
        user=user,
    )


def test_run_inline_with_a_baseline_runs_both_and_prints_the_comparison(
    version: DatasetVersion, model_endpoint: Simulator, never_queued: list[Any], operator: Any
) -> None:
    model_endpoint.configure(mistake_rate=0)
    candidate = _staged(operator)

    output = _run("--release", str(candidate.number), "--baseline", "production")

    runs = {e.release.number: e for e in Eval.objects.select_related("release")}
    assert sorted(runs) == [1, candidate.number]
    assert all(e.state == EvalState.FINISHED for e in runs.values())
    assert never_queued == []
    base = runs[1]
    assert f"  eval {base.pk}: running 5 inline" in output
    comparison = output.splitlines()[-10:]
    assert comparison[:2] == [
        f"against eval {base.pk} (release 1):",
        "  tool_selection     1.000 -> 1.000  +0.0 pts [+0.0, +0.0]",
    ]
    # One task example: too few pairs for an interval.
    assert "  task_completion    1.000 -> 1.000  +0.0 pts [n/a]" in comparison
    assert comparison[-1] == "  0 regressed, 0 improved"


def test_inline_and_no_wait_together_are_refused(
    version: DatasetVersion, never_queued: list[Any]
) -> None:
    with pytest.raises(CommandError) as refused:
        _run("--release", "production", "--no-wait")
    assert refused.value.returncode == 2
    assert Eval.objects.count() == 0
