"""The curation pages: the queue of corrections, datasets, examples by hand, from a run,
JSONL import and export.

Operators (view, change) curate; auditors only look (403 on every form and POST);
reviewers and outsiders get 403 everywhere; the anonymous are sent to log in. An unknown
agent, dataset, version, candidate or run is 404. A denied, refused or invalid request
changes nothing and says why, naming the place of every error.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client
from guardian.shortcuts import assign_perm

from agentdesk.roles import roles_sync
from audit.models import AuditEvent
from evals import datasets
from evals.models import Dataset, DatasetVersion
from reviews import services as reviews
from reviews.models import CandidateStatus, GoldenCandidate, Queue
from runs.models import Action, ActionStatus, Run, RunState
from tests.releases.pages import client_for
from tests.reviews.factories import REFUND, request_make

pytestmark = pytest.mark.django_db

AGENT = "support"
BASE = f"/evals/{AGENT}"
CONVERSATION = [
    {"role": "system", "content": "You are the shop's support agent."},
    {"role": "user", "content": "My teapot arrived shattered (SO-1002)."},
    {
        "role": "tool",
        "tool_call_id": "c0",
        "content": '{"order_id": "SO-1002", "total": "41.50"}',
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "issue_refund", "arguments": json.dumps(REFUND)},
            }
        ],
    },
]
STEP = {
    "kind": "step",
    "id": "refund-teapot",
    "tags": ["refund"],
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
}


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def people(operator: Any, auditor: Any, reviewer: Any, outsider: Any) -> dict[str, Any]:
    return {
        "operator": operator,
        "auditor": auditor,
        "reviewer": reviewer,
        "outsider": outsider,
        "anonymous": None,
    }


@pytest.fixture
def dataset(operator: Any) -> Dataset:
    """support/gating at version 1, holding STEP."""
    return datasets.dataset_create(
        agent_name=AGENT, name="gating", user=operator, examples=[STEP]
    ).dataset


@pytest.fixture
def refunds(support_queues: None, reviewer: Any) -> Queue:
    queue = Queue.objects.get(slug="refunds")
    assign_perm("reviews.view_queue", reviewer, queue)
    assign_perm("reviews.decide_queue", reviewer, queue)
    return queue


def _parked(queue: Queue, **kwargs: Any) -> Any:
    request = request_make(queue=queue, **kwargs)
    request.run.checkpoint = {"messages": CONVERSATION}
    request.run.save(update_fields=["checkpoint"])
    return request


@pytest.fixture
def edited(refunds: Queue, reviewer: Any) -> GoldenCandidate:
    """A reviewer's edit of a refund (amount 29.00 → 20.50), filed by the inbox's service."""
    request = _parked(refunds)
    reviews.approval_edit(
        request_id=request.pk,
        user=reviewer,
        seen_hash=request.args_hash,
        arguments={**REFUND, "amount": "20.50"},
        reason="Only the teapot, not the shipping.",
    )
    return GoldenCandidate.objects.get(request=request)


@pytest.fixture
def rejected(refunds: Queue, reviewer: Any, edited: GoldenCandidate) -> GoldenCandidate:
    """A reviewer's rejection, filed after ``edited`` (so newer)."""
    request = _parked(refunds)
    reviews.approval_reject(
        request_id=request.pk, user=reviewer, feedback="Refund the sencha only."
    )
    return GoldenCandidate.objects.get(request=request)


@pytest.fixture
def finished_run() -> Run:
    """A succeeded support run with a looked-up order, an edited refund and a failed call."""
    run = Run.objects.create(
        agent_name=AGENT,
        input={
            "ticket_id": "T-0002",
            "customer_email": "jane@example.com",
            "subject": "My teapot arrived shattered",
            "body": "Order SO-1002: the teapot is in pieces. Please refund it.",
        },
        state=RunState.SUCCEEDED,
        trace_id=uuid.uuid4().hex,
        prompt_version="test",
        model="test-model",
        request_hash=uuid.uuid4().hex,
    )
    calls = [
        ("lookup_order", {"order_id": "SO-1002"}, None, ActionStatus.SUCCEEDED),
        ("issue_refund", REFUND, {**REFUND, "amount": "20.50"}, ActionStatus.SUCCEEDED),
        ("send_reply", {"ticket_id": "T-0002", "body": "x"}, None, ActionStatus.FAILED),
    ]
    for seq, (tool, arguments, approved, status) in enumerate(calls, start=1):
        Action.objects.create(
            run=run,
            proposed_seq=seq,
            index=0,
            tool_call_id=f"call_{seq}",
            tool=tool,
            raw_arguments=json.dumps(arguments),
            arguments=arguments,
            approved_arguments=approved,
            args_hash=f"h{seq}",
            idempotency_key=f"{run.pk}:{seq}:0",
            status=status,
        )
    return run


def _state() -> tuple[Any, ...]:
    """Everything a curation page may change."""
    return (
        sorted(Dataset.objects.values_list("agent_name", "name", "description")),
        list(DatasetVersion.objects.order_by("id").values_list("dataset__name", "number")),
        list(GoldenCandidate.objects.order_by("id").values_list("id", "status")),
        AuditEvent.objects.count(),
    )


def _flash(response: Any) -> str:
    return " | ".join(str(m) for m in response.context["messages"])


def _latest(dataset: Dataset) -> DatasetVersion:
    version = datasets.dataset_latest(dataset=dataset)
    assert version is not None
    return version


def _jsonl(*examples: Any) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in examples).encode()


# --- who sees what ---------------------------------------------------------------------------

VIEWERS = {"operator": 200, "auditor": 200, "reviewer": 403, "outsider": 403}
CHANGERS = {"operator": 200, "auditor": 403, "reviewer": 403, "outsider": 403}


@pytest.mark.parametrize("who", [*VIEWERS, "anonymous"])
@pytest.mark.parametrize(
    "path",
    [
        "/evals/",
        f"{BASE}/candidates/",
        f"{BASE}/datasets/",
        f"{BASE}/datasets/gating/",
        f"{BASE}/datasets/gating/versions/1/",
        f"{BASE}/datasets/gating/versions/1/export",
    ],
)
def test_view_pages_are_for_holders_of_view_dataset(
    people: dict[str, Any], dataset: Dataset, edited: GoldenCandidate, who: str, path: str
) -> None:
    response = client_for(people[who]).get(path)
    if who == "anonymous":
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")
    else:
        assert response.status_code == VIEWERS[who]


@pytest.mark.parametrize("who", [*CHANGERS, "anonymous"])
def test_change_forms_are_for_holders_of_change_dataset(
    people: dict[str, Any],
    dataset: Dataset,
    edited: GoldenCandidate,
    finished_run: Run,
    who: str,
) -> None:
    paths = [
        f"{BASE}/candidates/{edited.pk}/edit",
        f"{BASE}/datasets/gating/examples/new",
        f"{BASE}/datasets/gating/import",
        f"{BASE}/datasets/gating/from-run/{finished_run.pk}",
    ]
    client = client_for(people[who])
    for path in paths:
        response = client.get(path)
        if who == "anonymous":
            assert (response.status_code, response["Location"][:7]) == (302, "/login/"), path
        else:
            assert response.status_code == CHANGERS[who], path


def _posts(edited: GoldenCandidate, run: Run) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{BASE}/candidates/{edited.pk}/accept", {"dataset": "gating"}),
        (f"{BASE}/candidates/{edited.pk}/discard", {}),
        (
            f"{BASE}/candidates/{edited.pk}/edit",
            {"dataset": "gating", "expect_call": "on", "mode_order_id": "any"},
        ),
        (f"{BASE}/datasets/new", {"name": "fresh"}),
        (f"{BASE}/datasets/gating/remove", {"ids": ["refund-teapot"]}),
        (
            f"{BASE}/datasets/gating/examples/new",
            {"example": json.dumps({**STEP, "id": "another"})},
        ),
        (
            f"{BASE}/datasets/gating/from-run/{run.pk}",
            {"example": json.dumps({**STEP, "id": "from-run"})},
        ),
    ]


@pytest.mark.parametrize("who", ["auditor", "reviewer", "outsider", "anonymous"])
def test_every_post_without_change_dataset_is_refused_and_changes_nothing(
    people: dict[str, Any],
    dataset: Dataset,
    edited: GoldenCandidate,
    finished_run: Run,
    who: str,
) -> None:
    client = client_for(people[who])
    before = _state()
    for path, data in _posts(edited, finished_run):
        response = client.post(path, data)
        expected = 302 if who == "anonymous" else 403
        assert response.status_code == expected, path
    upload = {"file": _jsonl({**STEP, "id": "imported"}), "replace": ""}
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = client.post(
        f"{BASE}/datasets/gating/import",
        {"file": SimpleUploadedFile("x.jsonl", upload["file"])},
    )
    assert response.status_code == (302 if who == "anonymous" else 403)
    assert _state() == before


def test_operators_and_auditors_hold_the_dataset_permissions(
    operator: Any, auditor: Any, release_manager: Any
) -> None:
    perms = ("evals.view_dataset", "evals.change_dataset")
    assert [operator.has_perm(p) for p in perms] == [True, True]
    assert [release_manager.has_perm(p) for p in perms] == [True, True]
    assert [auditor.has_perm(p) for p in perms] == [True, False]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/evals/nobody/candidates/"),
        ("get", "/evals/nobody/datasets/"),
        ("get", f"{BASE}/datasets/missing/"),
        ("get", f"{BASE}/datasets/gating/versions/9/"),
        ("get", f"{BASE}/datasets/gating/versions/9/export"),
        ("get", f"{BASE}/candidates/999999/edit"),
        ("get", f"{BASE}/datasets/missing/import"),
        ("get", f"{BASE}/datasets/gating/from-run/{uuid.uuid4()}"),
        ("post", f"{BASE}/candidates/999999/accept"),
        ("post", f"{BASE}/candidates/999999/discard"),
        ("post", "/evals/nobody/datasets/new"),
        ("post", f"{BASE}/datasets/missing/remove"),
        ("post", f"{BASE}/datasets/missing/examples/new"),
    ],
)
def test_unknown_ids_are_404_and_change_nothing(
    operator: Any, dataset: Dataset, edited: GoldenCandidate, method: str, path: str
) -> None:
    before = _state()
    data = {"dataset": "gating", "name": "fresh", "ids": ["refund-teapot"], "example": "{}"}
    response = getattr(client_for(operator), method)(path, data if method == "post" else None)
    assert response.status_code == 404
    assert _state() == before


def test_a_candidate_of_another_agent_is_404_on_this_agents_pages(
    operator: Any, dataset: Dataset, edited: GoldenCandidate
) -> None:
    GoldenCandidate.objects.filter(pk=edited.pk).update(agent_name="support-unattended")
    before = _state()
    client = client_for(operator)
    assert client.get(f"{BASE}/candidates/{edited.pk}/edit").status_code == 404
    response = client.post(f"{BASE}/candidates/{edited.pk}/accept", {"dataset": "gating"})
    assert response.status_code == 404
    assert _state() == before


# --- the curation queue ----------------------------------------------------------------------


def test_the_queue_shows_pending_corrections_newest_first_with_what_each_corrects(
    operator: Any, dataset: Dataset, edited: GoldenCandidate, rejected: GoldenCandidate
) -> None:
    response = client_for(operator).get(f"{BASE}/candidates/")

    assert response.status_code == 200
    assert [card.candidate.pk for card in response.context["cards"]] == [rejected.pk, edited.pk]
    body = response.content.decode()
    assert body.index(f'id="candidate-{rejected.pk}"') < body.index(f'id="candidate-{edited.pk}"')
    # The conversation's tail, up to (not including) the proposing reply.
    card = response.context["cards"][1]
    assert [said.role for said in card.tail] == ["system", "user", "tool"]
    assert "My teapot arrived shattered (SO-1002)." in body
    # The edit's diff: only the amount changed.
    assert [(c.name, c.proposed, c.corrected, c.changed) for c in card.changes] == [
        ("order_id", "SO-1002", "SO-1002", False),
        ("amount", "29.00", "20.50", True),
        ("reason", "teapot arrived broken", "teapot arrived broken", False),
    ]
    assert "<del>29.00</del> → <ins>20.50</ins>" in body
    # The rejection's feedback.
    assert "Refund the sencha only." in body
    assert 'data-key="accept"' in body
    assert 'data-key="discard"' in body
    assert "evals/curation.js" in body


def test_the_queue_leaves_out_curated_corrections_and_says_when_it_is_empty(
    operator: Any, dataset: Dataset, edited: GoldenCandidate
) -> None:
    datasets.candidate_discard(candidate_id=edited.pk, user=operator)
    response = client_for(operator).get(f"{BASE}/candidates/")
    assert response.context["cards"] == []
    assert "Nothing to curate." in response.content.decode()


def test_an_auditor_sees_the_queue_without_its_forms(
    auditor: Any, dataset: Dataset, edited: GoldenCandidate
) -> None:
    body = client_for(auditor).get(f"{BASE}/candidates/").content.decode()
    assert "<del>29.00</del>" in body
    assert 'data-key="accept"' not in body
    assert f"/candidates/{edited.pk}/discard" not in body


def test_without_a_dataset_the_queue_says_to_create_one(
    operator: Any, edited: GoldenCandidate
) -> None:
    body = client_for(operator).get(f"{BASE}/candidates/").content.decode()
    assert "has no dataset yet" in body
    assert 'data-key="accept"' not in body


def test_accepting_adds_the_correction_as_a_tagged_example_in_a_new_version(
    operator: Any, dataset: Dataset, edited: GoldenCandidate
) -> None:
    response = client_for(operator).post(
        f"{BASE}/candidates/{edited.pk}/accept",
        {"dataset": "gating", "tags": "refund, partial ,refund", "note": "teapot"},
        follow=True,
    )

    assert response.redirect_chain == [(f"{BASE}/candidates/", 302)]
    assert _flash(response) == (
        f"Accepted correction {edited.pk} into gating: version 2 holds 2 examples."
    )
    version = _latest(dataset)
    assert (version.number, version.note, version.created_by) == (2, "teapot", operator)
    example = version.examples[1]
    assert example["id"] == f"candidate-{edited.pk}"
    assert example["tags"] == ["refund", "partial"]
    assert example["expected_calls"][0]["arguments"]["amount"] == {
        "mode": "exact",
        "value": "20.50",
        "tolerance": None,
        "options": None,
    }
    edited.refresh_from_db()
    assert edited.status == CandidateStatus.ACCEPTED
    assert (
        AuditEvent.objects.filter(verb="candidate.accepted", object_id=str(edited.pk)).count() == 1
    )


def test_the_second_curator_to_accept_is_told_and_nothing_changes(
    operator: Any, dataset: Dataset, edited: GoldenCandidate
) -> None:
    # Both opened the queue; the first accepts, then the second.
    first, second = client_for(operator), client_for(operator)
    assert second.get(f"{BASE}/candidates/").status_code == 200
    first.post(f"{BASE}/candidates/{edited.pk}/accept", {"dataset": "gating"})
    before = _state()

    response = second.post(
        f"{BASE}/candidates/{edited.pk}/accept", {"dataset": "gating"}, follow=True
    )

    assert _flash(response) == f"Nothing changed: Candidate {edited.pk} was accepted already."
    assert 'class="flash flash-warning"' in response.content.decode()
    assert _state() == before
    assert _latest(dataset).number == 2
    # Discarding it now, or accepting it edited, is refused the same way.
    response = second.post(f"{BASE}/candidates/{edited.pk}/discard", follow=True)
    assert _flash(response) == f"Nothing changed: Candidate {edited.pk} was accepted already."
    response = second.post(
        f"{BASE}/candidates/{edited.pk}/edit",
        {"dataset": "gating", "expect_call": "on", "value-order_id": "SO-1002"}
        | {f"mode_{n}": "any" for n in ("amount", "reason")}
        | {"mode_order_id": "exact"},
        follow=True,
    )
    assert _flash(response) == f"Nothing changed: Candidate {edited.pk} was accepted already."
    assert _state() == before


@pytest.mark.django_db(transaction=True)
def test_two_curators_accepting_at_once_make_one_version_and_the_other_is_told(
    operator: Any, edited: GoldenCandidate
) -> None:
    datasets.dataset_create(agent_name=AGENT, name="gating", user=operator, examples=[STEP])
    other = get_user_model().objects.create_user(username="olga")
    other.groups.add(roles_sync()["operator"])
    barrier = threading.Barrier(2)
    flashes: list[str] = []
    failures: list[BaseException] = []

    def accept(user: Any, tags: str) -> None:
        try:
            client = client_for(user)
            barrier.wait()
            response = client.post(
                f"{BASE}/candidates/{edited.pk}/accept",
                {"dataset": "gating", "tags": tags},
                follow=True,
            )
            # From the page, not response.context: the test client collects the templates
            # rendered by every thread.
            body = response.content.decode()
            flashes.append(body.split('<p class="flash flash-', 1)[1].split("</p>", 1)[0])
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=accept, args=(operator, "first")),
        threading.Thread(target=accept, args=(other, "second")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert sorted(flashes) == [
        f'success">Accepted correction {edited.pk} into gating: version 2 holds 2 examples.',
        f'warning">Nothing changed: Candidate {edited.pk} was accepted already.',
    ]
    dataset = Dataset.objects.get(agent_name=AGENT, name="gating")
    assert list(dataset.versions.order_by("number").values_list("number", flat=True)) == [1, 2]
    assert AuditEvent.objects.filter(verb="candidate.accepted").count() == 1


def test_accepting_into_a_dataset_that_is_not_there_is_refused(
    operator: Any, dataset: Dataset, edited: GoldenCandidate
) -> None:
    before = _state()
    response = client_for(operator).post(
        f"{BASE}/candidates/{edited.pk}/accept", {"dataset": "other"}, follow=True
    )
    assert _flash(response) == "Choose a dataset to accept the correction into."
    assert _state() == before


def test_a_correction_without_its_conversation_is_refused_with_what_to_do(
    operator: Any, dataset: Dataset, edited: GoldenCandidate
) -> None:
    GoldenCandidate.objects.filter(pk=edited.pk).update(messages=None)
    before = _state()
    client = client_for(operator)
    assert "Filed before conversations were kept" in (
        client.get(f"{BASE}/candidates/").content.decode()
    )
    response = client.post(
        f"{BASE}/candidates/{edited.pk}/accept", {"dataset": "gating"}, follow=True
    )
    assert _flash(response) == (
        f"Nothing changed: Candidate {edited.pk} was filed before its conversation was kept: "
        "write its example by hand."
    )
    assert _state() == before


def test_discarding_marks_the_correction_and_keeps_the_datasets(
    operator: Any, dataset: Dataset, rejected: GoldenCandidate
) -> None:
    response = client_for(operator).post(
        f"{BASE}/candidates/{rejected.pk}/discard", {"reason": "duplicate"}, follow=True
    )
    assert _flash(response) == f"Discarded correction {rejected.pk}."
    rejected.refresh_from_db()
    assert rejected.status == CandidateStatus.DISCARDED
    assert _latest(dataset).number == 1
    event = AuditEvent.objects.get(verb="candidate.discarded")
    assert (event.object_id, event.after) == (str(rejected.pk), {"reason": "duplicate"})


# --- editing the expectation -----------------------------------------------------------------


def _expectation(**overrides: Any) -> dict[str, Any]:
    data = {
        "dataset": "gating",
        "expect_call": "on",
        "reason": "Only the teapot.",
        "tags": "refund",
        "mode_order_id": "exact",
        "value-order_id": "SO-1002",
        "mode_amount": "tolerance",
        "value-amount": "20.50",
        "tolerance_amount": "0.5",
        "mode_reason": "any",
        "value-reason": "",
    }
    data.update(overrides)
    return data


def test_the_edit_form_is_the_tools_schema_with_a_match_mode_per_argument(
    operator: Any, dataset: Dataset, edited: GoldenCandidate
) -> None:
    response = client_for(operator).get(f"{BASE}/candidates/{edited.pk}/edit")
    assert response.status_code == 200
    form = response.context["form"]
    assert form.argument_names == ["order_id", "amount", "reason"]
    assert form.values.initial == {
        "order_id": "SO-1002",
        "amount": "20.50",
        "reason": REFUND["reason"],
    }
    assert form.initial["expect_call"] is True
    assert form.initial["forbid_tool"] is False
    body = response.content.decode()
    for name in ("order_id", "amount", "reason"):
        assert f'name="mode_{name}"' in body
        assert f'name="value-{name}"' in body
    assert '<option value="tolerance">within a tolerance</option>' in body


def test_an_edited_expectation_is_accepted_with_its_modes(
    operator: Any, dataset: Dataset, edited: GoldenCandidate
) -> None:
    response = client_for(operator).post(
        f"{BASE}/candidates/{edited.pk}/edit", _expectation(), follow=True
    )
    assert _flash(response) == f"Accepted correction {edited.pk}, edited, into gating: version 2."
    example = _latest(dataset).examples[1]
    assert example["tags"] == ["refund"]
    assert example["reason"] == "Only the teapot."
    assert example["forbidden_tools"] == []
    arguments = example["expected_calls"][0]["arguments"]
    assert {name: (m["mode"], m["value"], m["tolerance"]) for name, m in arguments.items()} == {
        "order_id": ("exact", "SO-1002", None),
        "amount": ("tolerance", 20.5, 0.5),
        "reason": ("any", None, None),
    }
    edited.refresh_from_db()
    assert edited.status == CandidateStatus.ACCEPTED


def test_a_rejection_edited_to_expect_a_call_instead(
    operator: Any, dataset: Dataset, rejected: GoldenCandidate
) -> None:
    form = client_for(operator).get(f"{BASE}/candidates/{rejected.pk}/edit").context["form"]
    assert form.initial["forbid_tool"] is True
    assert form.initial["expect_call"] is False
    data = _expectation(mode_amount="one_of", **{"options_amount": '["10.00", "12.50"]'})
    client_for(operator).post(f"{BASE}/candidates/{rejected.pk}/edit", data)
    example = _latest(dataset).examples[1]
    assert example["forbidden_tools"] == []
    amount = example["expected_calls"][0]["arguments"]["amount"]
    assert (amount["mode"], amount["options"]) == ("one_of", ["10.00", "12.50"])


def test_a_bad_expectation_names_its_field_and_saves_nothing(
    operator: Any, dataset: Dataset, edited: GoldenCandidate
) -> None:
    before = _state()
    client = client_for(operator)
    # The form's own checks: a tolerance without a tolerance, a value the schema refuses.
    response = client.post(
        f"{BASE}/candidates/{edited.pk}/edit",
        _expectation(tolerance_amount="", **{"value-order_id": "nope"}),
    )
    assert response.status_code == 400
    form = response.context["form"]
    assert form.errors == {"tolerance_amount": ["Give the tolerance."]}
    assert list(form.values.errors) == ["order_id"]
    # The examples' check against the tool: an option the tool would refuse, by place.
    response = client.post(
        f"{BASE}/candidates/{edited.pk}/edit",
        _expectation(mode_order_id="one_of", options_order_id='["SO-1002", "not an order"]'),
    )
    assert response.status_code == 400
    assert len(response.context["errors"]) == 1
    assert response.context["errors"][0].startswith(
        "examples[1].expected_calls[0].arguments.order_id: 'not an order' is not a valid order_id"
    )
    assert "examples[1].expected_calls[0].arguments.order_id" in response.content.decode()
    # Neither expecting nor forbidding.
    response = client.post(f"{BASE}/candidates/{edited.pk}/edit", _expectation(expect_call=""))
    assert response.status_code == 400
    assert response.context["form"].non_field_errors() == [
        "Expect the call, forbid the tool, or both."
    ]
    assert _state() == before


def test_a_correction_of_a_tool_the_agent_no_longer_has_cannot_be_edited(
    operator: Any, dataset: Dataset, edited: GoldenCandidate
) -> None:
    GoldenCandidate.objects.filter(pk=edited.pk).update(
        proposal={**edited.proposal, "tool": "refund_everything"}
    )
    before = _state()
    client = client_for(operator)
    response = client.get(f"{BASE}/candidates/{edited.pk}/edit", follow=True)
    assert _flash(response) == (
        "support has no tool 'refund_everything' any more: write this example by hand on a "
        "dataset's page."
    )
    # Accepted as it is, the example names the unknown tool.
    response = client.post(
        f"{BASE}/candidates/{edited.pk}/accept", {"dataset": "gating"}, follow=True
    )
    assert "examples[1].expected_calls[0].tool: support has no tool 'refund_everything'" in (
        _flash(response)
    )
    assert _state() == before


# --- datasets --------------------------------------------------------------------------------


def test_the_dataset_list_says_what_to_do_when_there_are_none(operator: Any) -> None:
    body = client_for(operator).get(f"{BASE}/datasets/").content.decode()
    assert "No datasets yet. Create one below" in body
    assert 'action="/evals/support/datasets/new"' in body


def test_a_new_dataset_starts_empty_at_version_1(operator: Any) -> None:
    response = client_for(operator).post(
        f"{BASE}/datasets/new", {"name": "refunds-edge", "description": "Odd refunds"}, follow=True
    )
    assert response.redirect_chain == [(f"{BASE}/datasets/refunds-edge/", 302)]
    dataset = Dataset.objects.get(agent_name=AGENT, name="refunds-edge")
    assert (dataset.description, dataset.created_by) == ("Odd refunds", operator)
    assert list(dataset.versions.values_list("number", "examples")) == [(1, [])]
    assert "No examples in this version." in response.content.decode()


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("gating", "support has a dataset named 'gating' already."),
        (
            "not a slug!",
            "Enter a valid “slug” consisting of letters, numbers, underscores or hyphens.",
        ),
        ("", "This field is required."),
    ],
)
def test_a_bad_dataset_name_is_refused(
    operator: Any, dataset: Dataset, name: str, error: str
) -> None:
    before = _state()
    response = client_for(operator).post(f"{BASE}/datasets/new", {"name": name})
    assert response.status_code == 400
    assert response.context["form"].errors == {"name": [error]}
    assert _state() == before


def test_the_dataset_page_shows_its_versions_and_the_latest_examples(
    operator: Any, dataset: Dataset
) -> None:
    datasets.dataset_add(
        dataset=dataset,
        examples=[
            {**STEP, "id": "no-cancel", "expected_calls": [], "forbidden_tools": ["cancel_order"]}
        ],
        note="no cancel",
        user=operator,
    )
    response = client_for(operator).get(f"{BASE}/datasets/gating/")
    assert response.status_code == 200
    assert [(v.number, n) for v, n in response.context["versions"]] == [(2, 2), (1, 1)]
    rows = response.context["examples"]
    assert [(r.kind, r.id, r.tags, r.calls, r.forbidden) for r in rows] == [
        (
            "step",
            "refund-teapot",
            ["refund"],
            ["issue_refund(order_id = SO-1002, amount ≈ 29.0 ± 0.01, reason: any)"],
            [],
        ),
        ("step", "no-cancel", ["refund"], [], ["cancel_order"]),
    ]
    body = response.content.decode()
    assert 'name="ids" value="no-cancel"' in body
    assert "no cancel" in body
    assert "otto" in body


def test_a_version_page_shows_that_version_as_it_was(operator: Any, dataset: Dataset) -> None:
    datasets.dataset_add(dataset=dataset, examples=[{**STEP, "id": "b"}], note="", user=operator)
    response = client_for(operator).get(f"{BASE}/datasets/gating/versions/1/")
    assert [row.id for row in response.context["examples"]] == ["refund-teapot"]
    body = response.content.decode()
    assert "latest is v2" in body
    assert 'name="ids"' not in body  # removing is from the latest only


def test_removing_ticked_examples_makes_a_version_without_them(
    operator: Any, dataset: Dataset
) -> None:
    datasets.dataset_add(dataset=dataset, examples=[{**STEP, "id": "b"}], note="", user=operator)
    response = client_for(operator).post(
        f"{BASE}/datasets/gating/remove", {"ids": ["refund-teapot"], "note": "stale"}, follow=True
    )
    assert _flash(response) == "Removed 1 example(s): version 3 holds 1."
    version = _latest(dataset)
    assert ([e["id"] for e in version.examples], version.note) == (["b"], "stale")


@pytest.mark.parametrize(
    ("ids", "error"),
    [
        ([], "Tick at least one example to remove."),
        (
            ["gone"],
            "gone is not an example of the latest version (it changed meanwhile?).",
        ),
    ],
)
def test_removing_nothing_or_an_unknown_example_is_refused(
    operator: Any, dataset: Dataset, ids: list[str], error: str
) -> None:
    before = _state()
    response = client_for(operator).post(f"{BASE}/datasets/gating/remove", {"ids": ids})
    assert response.status_code == 400
    assert response.context["remove_form"].errors["ids"] == [error]
    assert error in response.content.decode()
    assert _state() == before


# --- an example by hand ------------------------------------------------------------------------


def test_a_hand_written_example_is_added_as_a_new_version(operator: Any, dataset: Dataset) -> None:
    client = client_for(operator)
    start = client.get(f"{BASE}/datasets/gating/examples/new")
    assert json.loads(start.context["form"].initial["example"])["kind"] == "step"
    example = {**STEP, "id": "by-hand", "tags": ["manual"]}
    response = client.post(
        f"{BASE}/datasets/gating/examples/new", {"example": json.dumps(example)}, follow=True
    )
    assert _flash(response) == "Added the example: version 2 holds 2."
    version = _latest(dataset)
    assert (version.note, version.examples[1]["id"], version.examples[1]["tags"]) == (
        "Written by hand.",
        "by-hand",
        ["manual"],
    )


def test_a_bad_hand_written_example_lists_every_error_and_saves_nothing(
    operator: Any, dataset: Dataset
) -> None:
    bad = {
        **STEP,
        "id": "bad",
        "expected_calls": [
            {
                "tool": "issue_refund",
                "arguments": {
                    "amount": {"mode": "exact", "value": "-3"},
                    "order_id": {"mode": "tolerance", "value": "SO-1"},
                },
            },
            {"tool": "refund_everything"},
        ],
        "colour": "blue",
    }
    before = _state()
    response = client_for(operator).post(
        f"{BASE}/datasets/gating/examples/new", {"example": json.dumps(bad)}
    )
    assert response.status_code == 400
    assert response.context["errors"] == [
        "example.expected_calls[0].arguments.order_id: Value error, a tolerance match needs a "
        "tolerance",
        "example.colour: Extra inputs are not permitted",
    ]
    # Once the document is right, the tool's checks name theirs.
    bad.pop("colour")
    bad["expected_calls"][0]["arguments"]["order_id"] = {"mode": "exact", "value": "SO-1"}
    response = client_for(operator).post(
        f"{BASE}/datasets/gating/examples/new", {"example": json.dumps(bad)}
    )
    errors = response.context["errors"]
    assert [e.split(":", 1)[0] for e in errors] == [
        "example.expected_calls[0].arguments.amount",
        "example.expected_calls[0].arguments.order_id",
        "example.expected_calls[1].tool",
    ]
    body = response.content.decode()
    assert "Nothing was saved: 3 problems to fix." in body
    assert "support has no tool &#x27;refund_everything&#x27;" in body
    assert _state() == before


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "{",
            "example: the example is not valid JSON: Expecting property name enclosed in "
            "double quotes: line 1 column 2 (char 1)",
        ),
        ('{"id": "x\\u0000"}', "example: the text at $.id contains a NUL character (\\u0000)"),
    ],
)
def test_text_that_is_not_storable_json_is_refused(
    operator: Any, dataset: Dataset, text: str, error: str
) -> None:
    before = _state()
    response = client_for(operator).post(f"{BASE}/datasets/gating/examples/new", {"example": text})
    assert response.status_code == 400
    assert [e.split(" at ")[0] for e in response.context["errors"]] == [error.split(" at ")[0]]
    assert _state() == before


def test_an_example_with_an_id_already_in_the_dataset_is_refused(
    operator: Any, dataset: Dataset
) -> None:
    before = _state()
    response = client_for(operator).post(
        f"{BASE}/datasets/gating/examples/new", {"example": json.dumps(STEP)}
    )
    assert response.context["errors"] == ["examples[1].id: 'refund-teapot' is examples[0]'s id too"]
    assert _state() == before


# --- a run as a task example -------------------------------------------------------------------


def test_a_finished_run_prefills_a_task_example(
    operator: Any, dataset: Dataset, finished_run: Run
) -> None:
    response = client_for(operator).get(f"{BASE}/datasets/gating/from-run/{finished_run.pk}")
    assert response.status_code == 200
    example = json.loads(response.context["form"].initial["example"])
    assert example == {
        "kind": "task",
        "id": f"run-{finished_run.pk}",
        "tags": [],
        "note": "",
        "source": {"run": str(finished_run.pk)},
        "input": finished_run.input,
        "ordered": False,
        "expected_calls": [
            {
                "tool": "lookup_order",
                "arguments": {"order_id": {"mode": "exact", "value": "SO-1002"}},
            },
            {
                "tool": "issue_refund",
                "arguments": {
                    "order_id": {"mode": "exact", "value": "SO-1002"},
                    "amount": {"mode": "exact", "value": "20.50"},
                    "reason": {"mode": "exact", "value": REFUND["reason"]},
                },
            },
        ],
        "forbidden_tools": [],
        "end_state": {"state": "succeeded"},
        "rubric": "",
    }


def test_a_run_example_is_saved_with_the_curators_rubric(
    operator: Any, dataset: Dataset, finished_run: Run
) -> None:
    client = client_for(operator)
    path = f"{BASE}/datasets/gating/from-run/{finished_run.pk}"
    example = json.loads(client.get(path).context["form"].initial["example"])
    example["rubric"] = "Apologises and says the refund amount."
    response = client.post(path, {"example": json.dumps(example)}, follow=True)
    assert _flash(response) == "Added the example: version 2 holds 2."
    version = _latest(dataset)
    assert version.note == f"From run {finished_run.pk}."
    saved = version.examples[1]
    assert (saved["kind"], saved["rubric"], saved["end_state"]["state"]) == (
        "task",
        "Apologises and says the refund amount.",
        "succeeded",
    )


def test_a_run_still_going_is_not_an_example_yet(
    operator: Any, dataset: Dataset, finished_run: Run
) -> None:
    Run.objects.filter(pk=finished_run.pk).update(state=RunState.WAITING_FOR_APPROVAL)
    before = _state()
    client = client_for(operator)
    path = f"{BASE}/datasets/gating/from-run/{finished_run.pk}"
    response = client.post(path, {"example": json.dumps({**STEP, "id": "x"})}, follow=True)
    assert _flash(response) == (
        f"Run {finished_run.pk} is waiting_for_approval: promote it when it has finished."
    )
    assert _state() == before


def test_a_run_of_another_agent_is_404(operator: Any, dataset: Dataset, finished_run: Run) -> None:
    Run.objects.filter(pk=finished_run.pk).update(agent_name="support-unattended")
    path = f"{BASE}/datasets/gating/from-run/{finished_run.pk}"
    assert client_for(operator).get(path).status_code == 404


# --- JSONL ---------------------------------------------------------------------------------------


def _upload(client: Client, content: bytes, **data: Any) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post(
        f"{BASE}/datasets/gating/import",
        {"file": SimpleUploadedFile("examples.jsonl", content), **data},
        follow=True,
    )


def test_an_import_adds_after_the_latest_or_replaces_it(operator: Any, dataset: Dataset) -> None:
    client = client_for(operator)
    response = _upload(client, _jsonl({**STEP, "id": "a"}, {**STEP, "id": "b"}))
    assert _flash(response) == "Imported: version 2 holds 3 examples."
    assert [e["id"] for e in _latest(dataset).examples] == ["refund-teapot", "a", "b"]
    assert _latest(dataset).note == "Imported."
    response = _upload(client, _jsonl({**STEP, "id": "c"}), replace="on", note="fresh start")
    assert _flash(response) == "Imported: version 3 holds 1 examples."
    assert ([e["id"] for e in _latest(dataset).examples], _latest(dataset).note) == (
        ["c"],
        "fresh start",
    )


def test_a_bad_jsonl_line_is_named_and_nothing_is_saved(operator: Any, dataset: Dataset) -> None:
    content = (
        _jsonl({**STEP, "id": "a"})
        + b'{"kind": "step", "id": \n'
        + _jsonl({**STEP, "id": "c", "expected_calls": [{"tool": "refund_everything"}]})
        + b'{"kind": "step", "id": "d\\u0000"}\n'
    )
    before = _state()
    response = _upload(client_for(operator), content)
    assert response.status_code == 400
    errors = response.context["errors"]
    assert [e.split(":", 1)[0].split(".")[0] for e in errors] == ["line 2", "line 3", "line 4"]
    assert errors[
        1
    ] == "line 3.expected_calls[0].tool: support has no tool 'refund_everything' " + (
        "(its tools: cancel_order, handoff_to_human, issue_refund, lookup_customer, "
        "lookup_order, search_refund_policy, send_reply)"
    )
    assert errors[2] == "line 4: the text at $.id contains a NUL character (\\u0000)"
    assert _state() == before


def test_a_file_that_is_not_utf8_is_refused(operator: Any, dataset: Dataset) -> None:
    before = _state()
    response = _upload(client_for(operator), b"\xff\xfe{}")
    assert response.status_code == 400
    assert response.context["form"].errors == {
        "file": ["The file is not UTF-8 text (byte 0 is not)."]
    }
    assert _state() == before


def test_an_import_that_changes_nothing_says_so(operator: Any, dataset: Dataset) -> None:
    before = _state()
    response = _upload(client_for(operator), _jsonl(STEP), replace="on")
    assert response.context["errors"] == [
        "Version 1 holds exactly these examples already; nothing to save."
    ]
    assert _state() == before


def test_export_downloads_a_version_as_jsonl(auditor: Any, operator: Any, dataset: Dataset) -> None:
    datasets.dataset_add(dataset=dataset, examples=[{**STEP, "id": "b"}], note="", user=operator)
    response = client_for(auditor).get(f"{BASE}/datasets/gating/versions/1/export")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    assert response["Content-Disposition"] == 'attachment; filename="support-gating-v1.jsonl"'
    lines = response.content.decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["refund-teapot"]
    version = datasets.dataset_version_get(dataset=dataset, number=1)
    assert version is not None
    assert response.content.decode() == datasets.dataset_export_jsonl(version=version)


def test_the_run_page_link_offers_each_dataset(
    operator: Any, auditor: Any, dataset: Dataset, finished_run: Run
) -> None:
    path = f"{BASE}/from-run/{finished_run.pk}"
    response = client_for(operator).get(path)
    assert response.status_code == 200
    assert f'href="{BASE}/datasets/gating/from-run/{finished_run.pk}"' in response.content.decode()
    assert client_for(auditor).get(path).status_code == 403
    assert client_for(operator).get(f"{BASE}/from-run/{uuid.uuid4()}").status_code == 404


def test_a_finished_runs_page_offers_it_to_a_dataset_for_curators_only(
    operator: Any, auditor: Any, finished_run: Run
) -> None:
    link = f'href="/evals/{AGENT}/from-run/{finished_run.pk}"'
    assert link in client_for(operator).get(f"/runs/{finished_run.pk}/").content.decode()
    assert link not in client_for(auditor).get(f"/runs/{finished_run.pk}/").content.decode()
