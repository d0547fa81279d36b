"""Invariant 8 on every storage path: a hostile endpoint echoes the configured key back.

The key is configured as the endpoint's (``AGENTDESK_LLM_ENDPOINTS``), reaches the endpoint
through the ``openai`` SDK, and comes back in the endpoint's errors, answers and tool calls
(tests/runs/hostile.py). After each scenario the key must be in no stored field of any
table, and on no page or API response of anyone who may see the run; where it was, the
placeholder says what was there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import models
from django.test import Client, override_settings
from guardian.shortcuts import assign_perm

from agentdesk.redaction import redact_row
from agentdesk.tokens import api_token_create
from agents import registry
from audit.models import AuditEvent
from reviews import services as review_services
from reviews.models import ApprovalRequest, Decision, GoldenCandidate, Queue, RequestKind
from runs import services as run_services
from runs.kernel.stepping import STEP_REDACTED, args_hash
from runs.models import Action, DeadLetter, Run, RunState, Step
from tests.conftest import wait_until
from tests.processes import ROOT, WorkerPool
from tests.reviews.test_concurrency import race
from tests.runs.conftest import TEST_AGENTS
from tests.runs.factories import drive, ticket_input
from tests.runs.hostile import (
    CANARY_KEY,
    HostileEndpoint,
    answer,
    refusal,
    tool_call,
    tool_calls,
)

PLACEHOLDER = "[REDACTED:api_key]"
HOSTILE_AGENTS = ["tests.runs.hostile.echoing", "tests.runs.hostile.echoing_bare"]


@pytest.fixture
def hostile(settings: Any) -> Iterator[HostileEndpoint]:
    """The hostile endpoint as the only configured one, its key the canary."""
    with HostileEndpoint() as endpoint:
        settings.AGENTDESK_LLM_ENDPOINTS = {
            "default": {"base_url": endpoint.base_url, "api_key": CANARY_KEY}
        }
        settings.AGENTDESK_LLM_TIMEOUT_S = 5.0
        settings.AGENTDESK_AGENTS = [*TEST_AGENTS, *HOSTILE_AGENTS]
        registry.agents.cache_clear()
        yield endpoint
    registry.agents.cache_clear()


def stored_leaks(secret: str = CANARY_KEY) -> list[str]:
    """Every row of every table with ``secret`` in one of its text or JSON columns.

    Every model of every app, every column that can hold text: a field added later, on
    any model, that a writer fills without redacting fails the scenario that fills it.
    """
    leaks = []
    for model in apps.get_models():
        columns = [
            field.attname
            for field in model._meta.concrete_fields
            if isinstance(field, models.CharField | models.TextField | models.JSONField)
        ]
        if not columns:
            continue
        for row in model._default_manager.values("pk", *columns):
            for column in columns:
                if secret in json.dumps(row[column], default=str):
                    leaks.append(f"{model._meta.label}.{column} of {row['pk']}")
    return leaks


def page_leaks(
    client: Client, paths: list[str], secret: str = CANARY_KEY, **headers: Any
) -> list[str]:
    """The paths whose response mentions ``secret``; each must answer 200."""
    leaks = []
    for path in paths:
        response = client.get(path, **headers)
        assert response.status_code == 200, (path, response.status_code)
        if secret in response.content.decode():
            leaks.append(path)
    return leaks


def _user(username: str) -> Any:
    return get_user_model().objects.create_user(username=username)


def _submit(agent_name: str) -> Run:
    # The echoing agents review and escalate in "default"; the runtime never creates it.
    Queue.objects.get_or_create(slug="default", defaults={"name": "Default"})
    run, _ = run_services.run_submit(agent_name=agent_name, run_input=ticket_input())
    return drive(run)


# --- errors: the endpoint quotes the Authorization header it refused -------------------------


@pytest.mark.django_db
def test_inv8_an_endpoint_echoing_the_key_in_its_error_leaves_it_in_no_field_of_a_parked_run(
    hostile: HostileEndpoint,
) -> None:
    run = _submit("echoing")

    assert hostile.keys_seen == [CANARY_KEY]  # the key did go out, through the SDK
    assert run.state == RunState.NEEDS_HUMAN
    expected = (
        "every link of the fallback chain failed; last: Error code: 401 - "
        f"Invalid credentials in header 'Authorization: Bearer {PLACEHOLDER}'"
    )
    assert run.error == {"class": "model_auth_failed", "message": expected}
    assert run.checkpoint["last_error"]["message"] == expected.removeprefix(
        "every link of the fallback chain failed; last: "
    )
    first, last = Step.objects.filter(run=run).order_by("seq")
    assert first.outcome["error"] == run.checkpoint["last_error"]
    assert last.outcome["error"] == run.error
    request = ApprovalRequest.objects.get(run=run, kind=RequestKind.RUN)
    assert request.routing_reason == expected
    assert request.context["error"] == run.error
    escalated = AuditEvent.objects.get(object_id=str(run.id), verb="run.needs_human")
    assert escalated.after["error"] == run.error
    assert stored_leaks() == []


@pytest.mark.django_db
def test_inv8_three_dead_letters_of_an_echoing_endpoint_hold_only_the_placeholder(
    hostile: HostileEndpoint, operator: Any
) -> None:
    run = _submit("echoing_bare")
    for _ in range(2):
        letter = DeadLetter.objects.get(run=run, status="open")
        run_services.dead_letter_requeue(letter_id=letter.pk, actor=operator)
        run = drive(run)

    letters = list(DeadLetter.objects.filter(run=run).order_by("pk"))
    assert [letter.status for letter in letters] == ["requeued", "requeued", "open"]
    assert len(hostile.keys_seen) == 3
    for letter in letters:
        assert letter.error["class"] == "model_auth_failed"
        assert f"Authorization: Bearer {PLACEHOLDER}" in letter.error["message"]
    assert run.state == RunState.DEAD_LETTERED
    assert run.error == letters[-1].error
    assert stored_leaks() == []

    client = Client()
    client.force_login(operator)
    paths = [f"/runs/{run.id}/", "/runs/dead-letters/"]
    paths += [f"/runs/dead-letters/{letter.pk}/" for letter in letters]
    assert page_leaks(client, paths) == []
    assert PLACEHOLDER in client.get(f"/runs/dead-letters/{letters[-1].pk}/").content.decode()


# --- the model's words: arguments, rationale, ids, answers; the tools' results ---------------


@pytest.mark.django_db
def test_inv8_a_hostile_models_calls_and_the_results_they_get_are_stored_redacted(
    hostile: HostileEndpoint,
) -> None:
    hostile.script(
        # A read the model step makes at once: the key in the arguments, the rationale, the
        # call's id; the tool gives the key back in its result.
        tool_call(
            "read_note",
            {"text": "the key is {key}", "rationale": "because {key}", "confidence": 0.9},
            call_id="call_{key}",
        ),
        # Arguments its schema refuses: pydantic's error quotes the input. (Each malformed
        # call is followed by a good one: two malformed replies in a row change the link.)
        tool_call("read_note", {"text": "ok", "extra": "{key}"}),
        # The tool's own error quotes the key (message and details).
        tool_call("refuse_note", {"text": "{key}"}),
        # Arguments that are not JSON at all.
        tool_call("read_note", "not json {key}"),
        tool_call("read_note", {"text": "again"}),
        # A tool that does not exist, named after the key.
        tool_call("tool_{key}", {"text": "x"}),
        answer("Done. Log in with {key}."),
    )
    run = _submit("echoing")

    assert run.state == RunState.SUCCEEDED
    assert run.output == f"Done. Log in with {PLACEHOLDER}."
    actions = list(Action.objects.filter(run=run).order_by("proposed_seq", "index"))
    assert [(a.tool, a.status, a.error_class) for a in actions] == [
        ("read_note", "succeeded", ""),
        ("read_note", "failed", "tool_args_invalid"),
        ("refuse_note", "failed", "tool_error"),
        ("read_note", "failed", "tool_args_invalid"),
        ("read_note", "succeeded", ""),
        (f"tool_{PLACEHOLDER}", "failed", "tool_unknown"),
    ]
    read, invalid, refused, not_json, _, unknown = actions
    assert read.tool_call_id == f"call_{PLACEHOLDER}"
    assert read.arguments == {"text": f"the key is {PLACEHOLDER}"}
    assert json.loads(read.raw_arguments) == {
        "text": f"the key is {PLACEHOLDER}",
        "rationale": f"because {PLACEHOLDER}",
        "confidence": 0.9,
    }
    assert read.rationale == f"because {PLACEHOLDER}"
    assert read.result == {"note": f"the key is {PLACEHOLDER}", "found": True}
    assert refused.result == {
        "error": {
            "class": "tool_error",
            "message": f"there is no note {PLACEHOLDER}",
            "details": {"code": "no_such_note", "looked_for": PLACEHOLDER},
        }
    }
    assert invalid.result["error"]["details"]["errors"][0]["input"] == PLACEHOLDER
    assert not_json.arguments is None
    assert not_json.raw_arguments == f"not json {PLACEHOLDER}"
    assert not_json.result["error"]["details"] == {"raw": f"not json {PLACEHOLDER}"}
    assert unknown.result["error"]["message"].startswith(
        f"there is no tool named 'tool_{PLACEHOLDER}'"
    )
    # The hash covers the arguments as stored: the ones the policy judged and the tool ran.
    assert read.args_hash == args_hash("read_note", read.arguments, read.raw_arguments)
    # The conversation's copy of each call still pairs with its result.
    messages = run.checkpoint["messages"]
    first_call = next(i for i, m in enumerate(messages) if m.get("tool_calls"))
    assert messages[first_call]["tool_calls"][0]["id"] == read.tool_call_id
    assert messages[first_call + 1]["tool_call_id"] == read.tool_call_id
    models_named = set(Step.objects.filter(run=run, kind="model").values_list("model", flat=True))
    assert models_named == {f"gpt-4o-mini-{PLACEHOLDER}"}
    assert stored_leaks() == []


@pytest.mark.django_db
def test_inv8_a_secret_where_a_stored_text_is_cut_leaves_not_even_its_first_half(
    hostile: HostileEndpoint,
) -> None:
    """A hostile model pads its words so that a cut (500, 2000 characters) falls in the key.

    Redacted after the cut, the key's first half would be stored, unrecognised.
    """
    half = CANARY_KEY[: len(CANARY_KEY) // 2]
    # In the dump of the first read's result, {"note": "<text>", ...}, the key starts
    # 5 characters before the 500th.
    text = "z" * (500 - 5 - len('{"note": "')) + "{key}"
    hostile.script(
        tool_calls(
            ("read_note", {"text": text, "rationale": "r" * 1995 + "{key}"}, "call_1"),
            ("read_note", {"text": "second"}, "call_2"),
        ),
        answer("y" * 1995 + "{key}"),
    )
    run = _submit("echoing")

    assert run.state == RunState.SUCCEEDED
    first, second = Action.objects.filter(run=run).order_by("index")
    assert first.rationale == ("r" * 1995 + PLACEHOLDER)[:2000]
    second_read = Step.objects.get(run=run, executed_action=second)
    assert (
        second_read.state["last_content"]
        == (json.dumps({"note": "z" * 485 + PLACEHOLDER, "found": True})[:500])
    )
    final = Step.objects.filter(run=run, kind="model").order_by("seq").last()
    assert final.reason == ("y" * 1995 + PLACEHOLDER)[:2000]
    assert stored_leaks(half) == []


@pytest.mark.django_db
def test_inv8_a_refusal_quoting_the_key_past_its_cut_leaves_only_the_placeholder(
    hostile: HostileEndpoint,
) -> None:
    hostile.script(refusal("n" * 495 + "{key}"))
    run = _submit("echoing")

    assert run.state == RunState.NEEDS_HUMAN
    refused = Step.objects.filter(run=run, error_class="model_refusal").order_by("seq").first()
    assert refused is not None
    assert refused.outcome["error"]["message"] == ("n" * 495 + PLACEHOLDER)[:500]
    assert run.error["message"].endswith(("n" * 495 + PLACEHOLDER)[:500])
    assert stored_leaks(CANARY_KEY[:5]) == []


# --- the humans' side: requests, decisions, corrections -------------------------------------


def _parked_for_review(hostile: HostileEndpoint) -> tuple[Run, ApprovalRequest]:
    hostile.script(
        tool_call(
            "file_note",
            {"text": "file {key}", "rationale": "the customer sent {key}", "confidence": 0.5},
        ),
        answer("Filed."),
    )
    run = _submit("echoing")
    assert run.state == RunState.WAITING_FOR_APPROVAL
    return run, ApprovalRequest.objects.get(run=run)


@pytest.mark.django_db
def test_inv8_a_request_shows_its_reviewers_the_call_its_records_and_reason_redacted(
    hostile: HostileEndpoint, reviewer: Any, operator: Any, outsider: Any
) -> None:
    run, request = _parked_for_review(hostile)

    assert request.arguments == {"text": f"file {PLACEHOLDER}"}
    assert request.rationale == f"the customer sent {PLACEHOLDER}"
    assert request.context["records"] == {
        "note": {"text": f"file {PLACEHOLDER}", "owner": "jane@example.com"}
    }
    assert stored_leaks() == []

    assign_perm("reviews.view_queue", reviewer, request.queue)
    assign_perm("reviews.decide_queue", reviewer, request.queue)
    client = Client()
    client.force_login(reviewer)
    detail = client.get(f"/inbox/requests/{request.pk}/").content.decode()
    assert f"file {PLACEHOLDER}" in detail
    _, key = api_token_create(user=reviewer, name="ci")
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    paths = ["/inbox/", f"/inbox/requests/{request.pk}/", f"/runs/{run.id}/"]
    assert page_leaks(client, paths) == []
    assert page_leaks(client, ["/api/requests", f"/api/requests/{request.pk}"], **bearer) == []

    # Someone without access to the queue gets nothing, with or without a secret in it.
    client.force_login(outsider)
    assert client.get(f"/inbox/requests/{request.pk}/").status_code == 404


@pytest.mark.django_db
def test_inv8_an_edit_with_a_secret_is_stored_hashed_and_run_redacted_and_so_is_its_correction(
    hostile: HostileEndpoint, reviewer: Any
) -> None:
    run, request = _parked_for_review(hostile)

    outcome = review_services.approval_edit(
        request_id=request.pk,
        user=reviewer,
        seen_hash=request.args_hash,
        arguments={"text": f"edited, key {CANARY_KEY}"},
        reason=f"use {CANARY_KEY} instead",
    )
    run = drive(run)

    assert outcome.completed is True
    request.refresh_from_db()
    assert request.arguments == {"text": f"edited, key {PLACEHOLDER}"}
    assert request.args_hash == review_services.request_hash("file_note", request.arguments)
    decision = Decision.objects.get(request=request, kind="edit")
    assert decision.arguments == request.arguments
    assert decision.reason == f"use {PLACEHOLDER} instead"
    action = Action.objects.get(pk=request.action_id)
    assert action.result == {"filed": f"edited, key {PLACEHOLDER}"}  # what ran is what shows
    candidate = GoldenCandidate.objects.get(decision=decision)
    assert candidate.proposal == {
        "tool": "file_note",
        "arguments": {"text": f"file {PLACEHOLDER}"},
        "rationale": f"the customer sent {PLACEHOLDER}",
        "confidence": 0.5,
    }
    assert candidate.correction == {"kind": "edit", "arguments": request.arguments}
    assert candidate.reason == f"use {PLACEHOLDER} instead"
    assert run.state == RunState.SUCCEEDED
    assert stored_leaks() == []


@pytest.mark.django_db
def test_inv8_feedback_with_a_secret_reaches_the_model_the_request_and_the_correction_redacted(
    hostile: HostileEndpoint, reviewer: Any
) -> None:
    run, request = _parked_for_review(hostile)

    review_services.approval_reject(
        request_id=request.pk, user=reviewer, feedback=f"  Never file {CANARY_KEY}.  "
    )
    run = drive(run)

    request.refresh_from_db()
    assert request.feedback == f"Never file {PLACEHOLDER}."
    assert Decision.objects.get(request=request).reason == f"Never file {PLACEHOLDER}."
    candidate = GoldenCandidate.objects.get(request=request)
    assert candidate.correction == {"kind": "reject", "feedback": f"Never file {PLACEHOLDER}."}
    action = Action.objects.get(pk=request.action_id)
    assert action.result["error"]["details"] == {"feedback": f"Never file {PLACEHOLDER}."}
    tool_message = next(m for m in run.checkpoint["messages"] if m["role"] == "tool")
    assert f"Never file {PLACEHOLDER}." in tool_message["content"]
    assert run.state == RunState.SUCCEEDED
    assert stored_leaks() == []


@pytest.mark.django_db
def test_inv8_a_person_ending_a_stuck_run_with_a_secret_leaves_only_the_placeholder(
    hostile: HostileEndpoint, reviewer: Any
) -> None:
    run = _submit("echoing")
    request = ApprovalRequest.objects.get(run=run, kind=RequestKind.RUN)

    review_services.approval_reject(
        request_id=request.pk, user=reviewer, feedback=f"the key {CANARY_KEY} is revoked"
    )

    run.refresh_from_db()
    assert run.state == RunState.FAILED
    assert run.error["class"] == "model_auth_failed"
    assert run.error["message"].endswith(f"ended by rita: the key {PLACEHOLDER} is revoked")
    assert stored_leaks() == []


@pytest.mark.django_db
def test_inv8_a_long_approval_reason_is_cut_after_its_secret_is_redacted(
    hostile: HostileEndpoint, reviewer: Any
) -> None:
    _, request = _parked_for_review(hostile)

    review_services.approval_approve(
        request_id=request.pk,
        user=reviewer,
        seen_hash=request.args_hash,
        reason="a" * (review_services.FEEDBACK_MAX - 5) + CANARY_KEY,
    )

    decision = Decision.objects.get(request=request)
    assert (
        decision.reason
        == ("a" * (review_services.FEEDBACK_MAX - 5) + PLACEHOLDER)[: review_services.FEEDBACK_MAX]
    )
    assert stored_leaks(CANARY_KEY[:5]) == []


@pytest.mark.django_db
def test_inv8_a_refused_edit_with_a_secret_stores_nothing(
    hostile: HostileEndpoint, reviewer: Any
) -> None:
    """Bad input: an edit the schema refuses saves nothing, secret or not."""
    _, request = _parked_for_review(hostile)
    before = (Decision.objects.count(), GoldenCandidate.objects.count(), request.args_hash)

    with pytest.raises(review_services.DecisionRefused):
        review_services.approval_edit(
            request_id=request.pk,
            user=reviewer,
            seen_hash=request.args_hash,
            arguments={"text": CANARY_KEY, "api_key": CANARY_KEY},
        )

    request.refresh_from_db()
    assert (Decision.objects.count(), GoldenCandidate.objects.count(), request.args_hash) == before
    assert stored_leaks() == []


# --- the same in real workers: the key configured in their environment ----------------------


@pytest.mark.slow
def test_inv8_workers_calling_an_echoing_endpoint_store_and_log_only_the_placeholder(
    hostile: HostileEndpoint, workers: WorkerPool
) -> None:
    hostile.script(tool_call("read_note", {"text": "the key is {key}", "rationale": "{key}"}))
    workers.env.update(
        AGENTDESK_LLM_BASE_URL=hostile.base_url,
        AGENTDESK_LLM_API_KEY=CANARY_KEY,
        AGENTDESK_AGENTS=",".join([*TEST_AGENTS, *HOSTILE_AGENTS]),
    )
    workers.start(1)
    Queue.objects.get_or_create(slug="default", defaults={"name": "Default"})
    run, _ = run_services.run_submit(agent_name="echoing", run_input=ticket_input())

    wait_until(
        lambda: Run.objects.get(pk=run.pk).state == RunState.NEEDS_HUMAN,
        timeout_s=60,
        what="the run to wait for a person",
        describe=lambda: workers.logs(tail_chars=3000),
    )

    run.refresh_from_db()
    assert hostile.keys_seen == [CANARY_KEY, CANARY_KEY]
    assert run.error["class"] == "model_auth_failed"
    assert f"Authorization: Bearer {PLACEHOLDER}" in run.error["message"]
    action = Action.objects.get(run=run)
    assert action.arguments == {"text": f"the key is {PLACEHOLDER}"}
    assert action.result == {"note": f"the key is {PLACEHOLDER}", "found": True}
    assert ApprovalRequest.objects.get(run=run).routing_reason == run.error["message"]
    assert stored_leaks() == []
    assert CANARY_KEY not in workers.logs()


# --- every text and JSON column has a redacting writer --------------------------------------

# Written through agentdesk.redaction.redact_row, which redacts every text and JSON column
# of the row, one added later included.
ROW_WRITTEN = {
    DeadLetter: "runs.kernel.transitions.finish",
    ApprovalRequest: "reviews.services.opening._request_open (arguments: the action's, hashed)",
    Decision: "reviews.services.deciding._decision_create",
    GoldenCandidate: "reviews.services.deciding._file_candidate",
}
# Written on the hot path, or under a hash, by writers that name their columns.
NAMED = {
    "runs.Run.input": "runs.services._run_create",
    "runs.Run.checkpoint": "runs.services._run_create, runs.kernel.stepping.commit",
    "runs.Run.output": "runs.kernel.transitions.finish",
    "runs.Run.error": "runs.kernel.transitions.run_error_set",
    # Degradation codes only (runs.models.Degradation), never free text.
    "runs.Run.degraded": "runs.kernel.stepping (Degradation values)",
    **{f"runs.Step.{name}": "runs.kernel.stepping.StepRecord.build" for name in STEP_REDACTED},
    "runs.Action.raw_arguments": "runs.kernel.model_step._proposed",
    "runs.Action.arguments": "runs.kernel.model_step._proposed",
    "runs.Action.rationale": "runs.kernel.model_step._proposed",
    "runs.Action.result": "runs.kernel.tool_step.settle_action (the step's, redacted)",
    # Copied from the decided request: its arguments (the action's, or a reviewer's edit,
    # redacted before they were hashed) and its feedback, redacted when it was typed.
    "runs.Action.approved_arguments": "runs.kernel.approvals.action_decision_record (hashed)",
    "runs.Action.review_feedback": "runs.kernel.approvals.action_decision_record",
    "evals.DatasetVersion.examples": "evals.datasets._version_store",
    # What a release did with an example: the model's calls and words, the judge's.
    **{
        f"evals.EvalResult.{name}": "evals.runner._result_record"
        for name in ("calls", "answer", "judge", "error", "scores")
    },
    "evals.Eval.metrics": "evals.runner._finish (numbers and metric names only)",
    "audit.AuditEvent.before": "audit.log.audit_record",
    "audit.AuditEvent.after": "audit.log.audit_record",
}
# What operators and admins write about configuration, not what a run produced: shown to
# the people who may change it. A prompt's secret would still be redacted from every
# message rendered from it (runs.services._run_create).
CONFIGURATION = {
    "reviews.Queue.description",
    "releases.AgentConfigVersion.config",
    "releases.PromptVersion.template",
    "evals.JudgePrompt.template",
    "evals.Dataset.gate",
}


def _project_columns() -> set[str]:
    """Every text and JSON column of the project's own apps (not the example shop's)."""
    columns = set()
    for app in apps.get_app_configs():
        package = app.name.split(".")[0]
        if package == "examples" or not (ROOT / package).is_dir():
            continue
        for model in app.get_models():
            for field in model._meta.concrete_fields:
                if isinstance(field, models.TextField | models.JSONField):
                    columns.add(f"{model._meta.label}.{field.name}")
    return columns


def test_inv8_every_text_and_json_column_has_a_writer_that_redacts_it() -> None:
    """A new column fails here until its writer redacts it (redact_row, or a named writer)."""
    row_written = {
        f"{model._meta.label}.{field.name}"
        for model in ROW_WRITTEN
        for field in model._meta.concrete_fields
        if isinstance(field, models.TextField | models.JSONField)
    }
    unclassified = _project_columns() - row_written - set(NAMED) - CONFIGURATION
    assert unclassified == set()
    assert set(NAMED) - _project_columns() == {"runs.Step.model"}  # a CharField, named too


@pytest.mark.parametrize("model", list(ROW_WRITTEN), ids=lambda model: model.__name__)
def test_inv8_redact_row_redacts_every_text_and_json_column(model: type[models.Model]) -> None:
    row = model()
    for field in model._meta.concrete_fields:
        if isinstance(field, models.JSONField):
            setattr(row, field.attname, {"said": [f"key {CANARY_KEY}"]})
        elif isinstance(field, models.TextField):
            setattr(row, field.attname, f"key {CANARY_KEY}")

    with override_settings(
        AGENTDESK_LLM_ENDPOINTS={"default": {"base_url": "http://x/v1", "api_key": CANARY_KEY}}
    ):
        redact_row(row)

    for field in model._meta.concrete_fields:
        if isinstance(field, models.JSONField):
            assert getattr(row, field.attname) == {"said": [f"key {PLACEHOLDER}"]}
        elif isinstance(field, models.TextField):
            assert getattr(row, field.attname) == f"key {PLACEHOLDER}"


def test_inv8_redact_row_leaves_the_columns_it_is_told_to_keep() -> None:
    """The arguments an approval's hash covers never change after the hash."""
    request = ApprovalRequest(arguments={"text": CANARY_KEY}, routing_reason=CANARY_KEY)

    with override_settings(
        AGENTDESK_LLM_ENDPOINTS={"default": {"base_url": "http://x/v1", "api_key": CANARY_KEY}}
    ):
        redact_row(request, keep=("arguments",))

    assert (request.arguments, request.routing_reason) == ({"text": CANARY_KEY}, PLACEHOLDER)


# --- people: without the right to decide, and two at once ----------------------------------


@pytest.mark.django_db
def test_inv8_inv9_feedback_with_a_secret_from_someone_who_may_not_decide_stores_nothing(
    hostile: HostileEndpoint, reviewer: Any, outsider: Any
) -> None:
    """Read-only: 403; no access: 404; and neither leaves a decision or the secret behind."""
    _, request = _parked_for_review(hostile)
    assign_perm("reviews.view_queue", reviewer, request.queue)  # may look, not decide
    client = Client()
    path = f"/inbox/requests/{request.pk}/reject"
    before = (Decision.objects.count(), AuditEvent.objects.count())

    client.force_login(reviewer)
    assert client.post(path, {"feedback": f"no, {CANARY_KEY}"}).status_code == 403
    client.force_login(outsider)
    assert client.post(path, {"feedback": f"no, {CANARY_KEY}"}).status_code == 404

    request.refresh_from_db()
    assert (request.state, request.feedback) == ("pending", "")
    assert (Decision.objects.count(), AuditEvent.objects.count()) == before
    assert stored_leaks() == []


@pytest.mark.django_db(transaction=True)
def test_inv8_two_reviewers_rejecting_at_once_with_secrets_leave_one_redacted_decision(
    hostile: HostileEndpoint,
) -> None:
    _, request = _parked_for_review(hostile)
    people = [_user(f"racer{i}") for i in range(2)]

    results = race(
        [
            lambda person=person: review_services.approval_reject(
                request_id=request.pk, user=person, feedback=f"{person.username}: {CANARY_KEY}"
            )
            for person in people
        ]
    )

    decided = [r for r in results if isinstance(r, review_services.Outcome)]
    refused = [r for r in results if isinstance(r, review_services.AlreadyDecided)]
    assert (len(decided), len(refused)) == (1, 1), results
    winner = decided[0].decision.decided_by.username
    request.refresh_from_db()
    assert request.feedback == f"{winner}: {PLACEHOLDER}"
    assert list(Decision.objects.filter(request=request).values_list("reason", flat=True)) == [
        f"{winner}: {PLACEHOLDER}"
    ]
    assert stored_leaks() == []


# --- rows older versions stored unredacted ---------------------------------------------------


@pytest.mark.django_db
def test_inv8_redact_stored_rewrites_what_older_versions_left_and_never_a_hashed_argument(
    hostile: HostileEndpoint,
) -> None:
    _, request = _parked_for_review(hostile)
    hostile.script()  # from here on, every call is refused with the key echoed
    ended = _submit("echoing_bare")
    assert ended.state == RunState.DEAD_LETTERED
    active, _ = run_services.run_submit(agent_name="echoing", run_input=ticket_input())
    leaked = {"class": "model_auth_failed", "message": f"Bearer {CANARY_KEY}"}
    # What an older version wrote, written past today's writers.
    Run.objects.filter(pk__in=[ended.pk, active.pk]).update(error=leaked)
    DeadLetter.objects.filter(run=ended).update(error=leaked)
    ApprovalRequest.objects.filter(pk=request.pk).update(
        routing_reason=f"echoed {CANARY_KEY}", arguments={"text": CANARY_KEY}
    )
    Action.objects.filter(pk=request.action_id).update(rationale=f"because {CANARY_KEY}")
    events_before = AuditEvent.objects.count()
    out = StringIO()

    call_command("redact_stored", "--batch", "1", stdout=out)

    assert out.getvalue().splitlines() == [
        "redacted 1 reviews.ApprovalRequest row(s)",
        "redacted 1 runs.Action row(s)",
        "redacted 1 runs.DeadLetter row(s)",
        "redacted 1 runs.Run row(s)",
        "skipped 1 queued or running run(s): run this again once they have stopped",
        "1 reviews.ApprovalRequest row(s) hold a secret in arguments an approval hash covers; "
        "left as they are: reject or discard them",
    ]
    ended.refresh_from_db()
    assert ended.error == {"class": "model_auth_failed", "message": f"Bearer {PLACEHOLDER}"}
    assert DeadLetter.objects.get(run=ended).error == ended.error
    assert Run.objects.get(pk=active.pk).error == leaked  # a worker's: not raced
    request.refresh_from_db()
    assert request.routing_reason == f"echoed {PLACEHOLDER}"
    assert request.arguments == {"text": CANARY_KEY}  # under the hash: counted, not changed
    assert Action.objects.get(pk=request.action_id).rationale == f"because {PLACEHOLDER}"
    events = AuditEvent.objects.filter(verb="records.redacted").order_by("seq")
    assert AuditEvent.objects.count() == events_before + 4
    assert [event.after["model"] for event in events] == [
        "runs.Run",
        "runs.Action",
        "runs.DeadLetter",
        "reviews.ApprovalRequest",
    ]
    assert events[0].after["ids"] == [str(ended.pk)]

    # Again: nothing left to do, and nothing written.
    out = StringIO()
    call_command("redact_stored", stdout=out)
    assert out.getvalue().splitlines()[0] == "nothing to redact"
    assert AuditEvent.objects.count() == events_before + 4
