"""The demo's golden dataset (examples.support.golden), made by ``seed_demo``."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from agents.registry import agent_get
from evals.examples import examples_checked
from evals.models import Dataset, DatasetVersion, Eval, EvalResult, EvalState
from examples.support import golden
from examples.support.models import Ticket

pytestmark = pytest.mark.django_db(transaction=True)


def _seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def _snapshot() -> list[Any]:
    return [
        list(Dataset.objects.values()),
        list(DatasetVersion.objects.values()),
        list(Eval.objects.values("pk", "state", "done")),
    ]


def test_seed_demo_makes_a_valid_gating_dataset_and_one_eval_of_production_once(
    transactional_db: None, settings: Any
) -> None:
    # Whatever model the environment names, the seed's eval is the simulator's, in process.
    settings.AGENTDESK_LLM_ENDPOINTS = {
        "default": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-test"}
    }
    output = _seed()

    dataset = Dataset.objects.get(agent_name="support", name="gating")
    assert dataset.gating is True
    version = dataset.versions.get()
    examples = version.examples
    tickets = Ticket.objects.count()
    assert len(examples) == tickets + len(golden.TASKS) == 55
    assert examples_checked(agent_get("support"), examples) == examples
    kinds = [e["kind"] for e in examples]
    assert (kinds.count("step"), kinds.count("task")) == (50, 5)
    first = next(e for e in examples if e["id"] == "t-0001-first-call")
    assert first["expected_calls"] == [
        {"tool": "lookup_order", "arguments": {"order_id": golden_exact("SO-1001")}}
    ]
    assert first["messages"][0]["role"] == "system"
    assert first["messages"][1]["content"].startswith("Ticket T-0001 from tom.baker@example.com")
    no_order = next(e for e in examples if e["id"] == "t-0050-first-call")
    assert no_order["expected_calls"][0]["tool"] == "lookup_customer"

    evaluation = Eval.objects.get()
    assert (evaluation.state, evaluation.done, evaluation.total) == (EvalState.FINISHED, 55, 55)
    assert f"Eval {evaluation.pk} of production (the model simulator): 55/55" in output
    assert evaluation.metrics["errors"] == 0
    missed = sorted(
        r.example_id
        for r in EvalResult.objects.filter(eval=evaluation, kind="step")
        if 0.0 in (r.scores or {}).values()
    )
    # The simulated agent's known misses: it hands the privacy tickets and T-0019 (German,
    # no order id) to a person at once.
    assert missed == [
        "t-0016-first-call",
        "t-0019-first-call",
        "t-0028-first-call",
        "t-0044-first-call",
    ]
    assert evaluation.metrics["metrics"]["tool_selection"] == {"n": 50, "mean": 0.96}
    assert settings.AGENTDESK_LLM_ENDPOINTS["default"]["base_url"] == "http://127.0.0.1:9/v1"

    before = _snapshot()
    again = _seed()
    assert _snapshot() == before
    assert "Golden dataset" not in again


def golden_exact(value: str) -> dict[str, Any]:
    return {"mode": "exact", "value": value, "tolerance": None, "options": None}
