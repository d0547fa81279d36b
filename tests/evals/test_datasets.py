"""Golden datasets: corrections become step examples, every change a new version, and
bad input (an expectation the tool refuses, an unknown tool, a malformed JSONL line)
names its place and saves nothing."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.db import connections

from audit.models import AuditEvent
from evals import datasets
from evals.examples import ExamplesRefused
from evals.models import Dataset, DatasetVersion
from examples.support.seed import seed_shop
from reviews import services as reviews
from reviews.models import ApprovalRequest, CandidateStatus, GoldenCandidate, RequestState
from runs import services as run_services
from runs.models import RunState
from tests.processes import Simulator
from tests.runs.factories import drive, seeded_ticket_input

pytestmark = pytest.mark.django_db

AGENT = "support"

REFUND_STEP = {
    "kind": "step",
    "id": "refund-teapot",
    "messages": [{"role": "user", "content": "My teapot arrived shattered (SO-1002)."}],
    "expected_calls": [
        {
            "tool": "issue_refund",
            "arguments": {
                "order_id": {"mode": "exact", "value": "SO-1002"},
                "amount": {"mode": "tolerance", "value": 29.0, "tolerance": 0.01},
                "reason": {"mode": "any"},
            },
        }
    ],
    "expected_policy": {"outcome": "review", "queue": "refunds"},
}


def _state() -> tuple[list[tuple[str, int]], int, list[str]]:
    return (
        list(DatasetVersion.objects.values_list("dataset__name", "number").order_by("id")),
        AuditEvent.objects.count(),
        list(GoldenCandidate.objects.values_list("status", flat=True).order_by("id")),
    )


@pytest.fixture
def dataset(operator: Any) -> Dataset:
    return datasets.dataset_create(
        agent_name=AGENT, name="gating", user=operator, examples=[REFUND_STEP]
    ).dataset


def _corrected(reviewer: Any, *, edit: bool) -> GoldenCandidate:
    seed_shop()
    run, _ = run_services.run_submit(agent_name=AGENT, run_input=seeded_ticket_input("T-0002"))
    run = drive(run)
    assert run.state == RunState.WAITING_FOR_APPROVAL
    request = ApprovalRequest.objects.get(run=run, state=RequestState.PENDING)
    if edit:
        reviews.approval_edit(
            request_id=request.pk,
            user=reviewer,
            seen_hash=request.args_hash,
            arguments={**request.arguments, "amount": "20.50"},
        )
    else:
        reviews.approval_reject(
            request_id=request.pk, user=reviewer, feedback="Refund the sencha only."
        )
    return GoldenCandidate.objects.get(run=run)


# --- corrections become examples ---------------------------------------------------------------


def test_an_edit_becomes_a_step_example_expecting_the_edited_call(
    model_endpoint: Simulator, reviewer: Any, operator: Any, dataset: Dataset
) -> None:
    candidate = _corrected(reviewer, edit=True)
    # The conversation the model had when it proposed the call, without its reply.
    assert candidate.messages[-1]["role"] == "assistant"
    assert candidate.messages[-1]["tool_calls"]

    version = datasets.candidates_accept(
        dataset=dataset, candidate_ids=[candidate.pk], user=operator
    )

    assert version.number == 2
    assert [e["id"] for e in version.examples] == ["refund-teapot", f"candidate-{candidate.pk}"]
    example = version.examples[1]
    assert example["kind"] == "step"
    assert example["source"] == {"candidate": candidate.pk, "run": str(candidate.run_id)}
    assert example["forbidden_tools"] == []
    assert [c["tool"] for c in example["expected_calls"]] == ["issue_refund"]
    arguments = example["expected_calls"][0]["arguments"]
    assert {name: (m["mode"], m["value"]) for name, m in arguments.items()} == {
        name: ("exact", value) for name, value in candidate.correction["arguments"].items()
    }
    assert arguments["amount"]["value"] == "20.50"
    # Up to the proposing reply: the last message kept is not the model's call.
    assert not (
        example["messages"][-1]["role"] == "assistant" and example["messages"][-1]["tool_calls"]
    )
    assert len(example["messages"]) == len(candidate.messages) - 1
    candidate.refresh_from_db()
    assert candidate.status == CandidateStatus.ACCEPTED
    accepted = AuditEvent.objects.get(verb="candidate.accepted")
    assert (accepted.object_id, accepted.after, accepted.actor_label) == (
        str(candidate.pk),
        {"dataset": "support/gating", "version": 2},
        "otto",
    )
    created = AuditEvent.objects.filter(verb="dataset.version_created").order_by("seq")
    assert [(e.before, e.after["number"], e.after["examples"]) for e in created] == [
        ({"number": None}, 1, 1),
        ({"number": 1}, 2, 2),
    ]

    before = _state()
    with pytest.raises(datasets.DatasetRefused, match=f"Candidate {candidate.pk} was accepted"):
        datasets.candidates_accept(dataset=dataset, candidate_ids=[candidate.pk], user=operator)
    assert _state() == before


def test_a_rejection_becomes_a_step_example_forbidding_the_call(
    model_endpoint: Simulator, reviewer: Any, operator: Any, dataset: Dataset
) -> None:
    candidate = _corrected(reviewer, edit=False)

    version = datasets.candidates_accept(
        dataset=dataset, candidate_ids=[candidate.pk], user=operator
    )

    example = version.examples[-1]
    assert (example["expected_calls"], example["forbidden_tools"], example["reason"]) == (
        [],
        ["issue_refund"],
        "Refund the sencha only.",
    )


def test_a_discarded_candidate_cannot_be_accepted_and_one_without_its_conversation_is_refused(
    model_endpoint: Simulator, reviewer: Any, operator: Any, dataset: Dataset
) -> None:
    candidate = _corrected(reviewer, edit=True)
    datasets.candidate_discard(candidate_id=candidate.pk, user=operator, reason="a one-off")
    assert AuditEvent.objects.get(verb="candidate.discarded").after == {"reason": "a one-off"}
    before = _state()
    with pytest.raises(datasets.DatasetRefused, match="was discarded already"):
        datasets.candidates_accept(dataset=dataset, candidate_ids=[candidate.pk], user=operator)
    with pytest.raises(datasets.DatasetRefused, match="was discarded already"):
        datasets.candidate_discard(candidate_id=candidate.pk, user=operator)
    with pytest.raises(datasets.DatasetRefused, match="There is no candidate 999999"):
        datasets.candidates_accept(dataset=dataset, candidate_ids=[999999], user=operator)
    assert _state() == before

    GoldenCandidate.objects.filter(pk=candidate.pk).update(
        status=CandidateStatus.CANDIDATE, messages=[]
    )
    with pytest.raises(datasets.DatasetRefused, match="filed before its conversation was kept"):
        datasets.candidates_accept(dataset=dataset, candidate_ids=[candidate.pk], user=operator)
    assert DatasetVersion.objects.count() == 1


# --- every error named, nothing saved ----------------------------------------------------------


def test_bad_expectations_are_refused_each_with_its_place_and_nothing_is_saved(
    operator: Any, dataset: Dataset
) -> None:
    bad = [
        {**REFUND_STEP, "id": "a", "expected_calls": [{"tool": "delete_shop", "arguments": {}}]},
        {
            **REFUND_STEP,
            "id": "b",
            "expected_calls": [
                {
                    "tool": "issue_refund",
                    "arguments": {
                        "amount": {"mode": "exact", "value": "-5"},
                        "colour": {"mode": "any"},
                    },
                }
            ],
        },
        {**REFUND_STEP, "id": "c", "forbidden_tools": ["teleport"]},
        {**REFUND_STEP, "id": "a"},
        {"kind": "step", "id": "d", "messages": [], "surprise": 1},
        {"kind": "task", "id": "e", "input": {"ticket_id": 5}},
    ]
    before = _state()

    with pytest.raises(ExamplesRefused) as refused:
        datasets.dataset_commit(dataset=dataset, examples=bad, note="bad", user=operator)

    errors = refused.value.errors
    assert errors[0] == (
        "examples[0].expected_calls[0].tool: support has no tool 'delete_shop' (its tools: "
        "cancel_order, handoff_to_human, issue_refund, lookup_customer, lookup_order, "
        "search_refund_policy, send_reply)"
    )
    assert errors[1].startswith("examples[1].expected_calls[0].arguments.amount: '-5' is not")
    assert errors[2] == (
        "examples[1].expected_calls[0].arguments.colour: issue_refund has no argument 'colour'"
    )
    assert errors[3] == "examples[2].forbidden_tools[0]: support has no tool 'teleport'"
    assert errors[4] == "examples[3].id: 'a' is examples[0]'s id too"
    assert (
        "examples[4].messages: List should have at least 1 item after validation, not 0"
        in (errors[5:])
    )
    assert "examples[4].surprise: Extra inputs are not permitted" in errors[5:]
    assert any(e.startswith("examples[5].input") for e in errors)
    assert _state() == before


def test_a_match_without_what_it_needs_is_refused(operator: Any, dataset: Dataset) -> None:
    example = {
        **REFUND_STEP,
        "expected_calls": [
            {"tool": "issue_refund", "arguments": {"amount": {"mode": "tolerance", "value": 29}}}
        ],
    }
    with pytest.raises(ExamplesRefused) as refused:
        datasets.dataset_commit(dataset=dataset, examples=[example], note="", user=operator)
    assert refused.value.errors == [
        "examples[0].expected_calls[0].arguments.amount: Value error, a tolerance match needs a "
        "tolerance"
    ]


def test_a_name_taken_and_an_unchanged_list_are_refused(operator: Any, dataset: Dataset) -> None:
    before = _state()
    with pytest.raises(datasets.DatasetRefused, match="has a dataset named 'gating' already"):
        datasets.dataset_create(agent_name=AGENT, name="gating", user=operator)
    with pytest.raises(datasets.DatasetRefused, match="Version 1 holds exactly these examples"):
        datasets.dataset_commit(dataset=dataset, examples=[REFUND_STEP], note="", user=operator)
    with pytest.raises(datasets.DatasetRefused, match="There is no agent 'nobody'"):
        datasets.dataset_create(agent_name="nobody", name="x", user=operator)
    assert _state() == before
    assert Dataset.objects.count() == 1


def test_replace_and_remove_make_new_versions_and_refuse_unknown_ids(
    operator: Any, dataset: Dataset
) -> None:
    changed = {**REFUND_STEP, "note": "the teapot, with its tolerance"}
    v2 = datasets.dataset_example_replace(
        dataset=dataset, example_id="refund-teapot", example=changed, note="note", user=operator
    )
    assert (v2.number, v2.examples[0]["note"]) == (2, "the teapot, with its tolerance")
    v3 = datasets.dataset_examples_remove(
        dataset=dataset, example_ids=["refund-teapot"], note="gone", user=operator
    )
    assert (v3.number, v3.examples) == (3, [])
    # Versions are immutable: the first still holds its example.
    assert DatasetVersion.objects.get(dataset=dataset, number=1).examples[0]["id"] == (
        "refund-teapot"
    )
    with pytest.raises(datasets.DatasetRefused, match="has no example 'nope'"):
        datasets.dataset_examples_remove(
            dataset=dataset, example_ids=["nope"], note="", user=operator
        )


# --- JSONL --------------------------------------------------------------------------------


def test_a_jsonl_import_names_each_bad_line_and_saves_nothing(
    operator: Any, dataset: Dataset
) -> None:
    text = "\n".join(
        [
            json.dumps({**REFUND_STEP, "id": "one"}),
            "{not json",
            "",
            json.dumps({**REFUND_STEP, "id": "three", "forbidden_tools": ["teleport"]}),
            json.dumps([1, 2]),
        ]
    )
    before = _state()

    with pytest.raises(ExamplesRefused) as refused:
        datasets.dataset_import_jsonl(dataset=dataset, text=text, note="import", user=operator)

    errors = refused.value.errors
    assert (
        errors[0]
        == "line 2: not JSON (Expecting property name enclosed in double quotes at column 2)"
    )
    assert errors[1] == "line 4.forbidden_tools[0]: support has no tool 'teleport'"
    assert errors[2].startswith("line 5: ")
    assert len(errors) == 3
    assert _state() == before


def test_an_export_imports_back_to_the_same_examples(operator: Any, dataset: Dataset) -> None:
    version = datasets.dataset_latest(dataset=dataset)
    assert version is not None
    text = datasets.dataset_export_jsonl(version=version)
    assert text.count("\n") == 1
    assert json.loads(text)["id"] == "refund-teapot"

    with pytest.raises(datasets.DatasetRefused, match="holds exactly these examples"):
        datasets.dataset_import_jsonl(
            dataset=dataset, text=text, note="again", user=operator, replace=True
        )


# --- two curators at once ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_changes_get_consecutive_versions_and_lose_nothing(operator: Any) -> None:
    dataset = datasets.dataset_create(agent_name=AGENT, name="race", user=operator).dataset
    ids = [f"ex-{i}" for i in range(4)]
    barrier = threading.Barrier(len(ids))
    errors: list[BaseException] = []

    def add(example_id: str) -> None:
        try:
            barrier.wait()
            datasets.dataset_add(
                dataset=dataset,
                examples=[{**REFUND_STEP, "id": example_id}],
                note=example_id,
                user=operator,
            )
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=add, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    versions = list(DatasetVersion.objects.filter(dataset=dataset).order_by("number"))
    assert [v.number for v in versions] == [1, 2, 3, 4, 5]
    # Each version is the one before it plus one example: nobody's addition was lost.
    assert [len(v.examples) for v in versions] == [0, 1, 2, 3, 4]
    assert sorted(e["id"] for e in versions[-1].examples) == ids


def test_a_secret_in_an_example_is_redacted_before_it_is_stored(
    operator: Any, dataset: Dataset
) -> None:
    leaked = {
        **REFUND_STEP,
        "id": "leak",
        "messages": [
            {"role": "user", "content": "my key is sk-proj-abcdefghijklmnopqrstuvwxyz123456 ok"}
        ],
    }
    version = datasets.dataset_add(dataset=dataset, examples=[leaked], note="", user=operator)

    stored = DatasetVersion.objects.get(pk=version.pk).examples[-1]["messages"][0]["content"]
    assert stored == "my key is [REDACTED:api_key] ok"


@pytest.mark.parametrize("outcome", ["approve", "reject"])
def test_a_default_the_sla_applied_is_filed_as_a_candidate_marked_expired(
    model_endpoint: Simulator, operator: Any, dataset: Dataset, outcome: str
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from reviews.services import approvals_expire_overdue

    seed_shop()
    run = drive(
        run_services.run_submit(agent_name=AGENT, run_input=seeded_ticket_input("T-0002"))[0]
    )
    request = ApprovalRequest.objects.get(run=run, state=RequestState.PENDING)
    queue = request.queue
    queue.escalate_to = None
    queue.expiry_outcome = outcome
    queue.save()
    ApprovalRequest.objects.filter(pk=request.pk).update(
        due_at=timezone.now() - timedelta(seconds=1)
    )

    approvals_expire_overdue()

    candidate = GoldenCandidate.objects.get(run=run)
    assert candidate.correction["expired"] is True
    assert candidate.decision.kind == "expire"
    example = datasets.candidates_accept(
        dataset=dataset, candidate_ids=[candidate.pk], user=operator
    ).examples[-1]
    assert example["tags"] == ["sla-default"]
    if outcome == "approve":  # what ran, expected exactly: a curator accepts it only if right
        assert (
            example["expected_calls"][0]["arguments"]["amount"]["value"]
            == (request.arguments["amount"])
        )
    else:
        assert example["forbidden_tools"] == ["issue_refund"]
        assert "No reviewer approved this call in time" in example["reason"]
