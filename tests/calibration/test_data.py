"""The labels are what people decided of the calls the policy sent them: approved unchanged
agrees; edited or rejected disagrees; an expired default, a call without a confidence and
a sandboxed run's call are no label."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from calibration.data import labels_for
from calibration.stats import Labelled
from reviews import services
from reviews.models import ApprovalRequest
from runs.models import Run, RunPurpose
from tests.reviews.factories import queue_make, request_make, user_make

pytestmark = pytest.mark.django_db


def test_each_decision_is_its_label_and_nothing_else_is(db: None) -> None:
    reviewer = user_make("rita")
    queue = queue_make("refunds", deciders=(reviewer,))
    approved = request_make(queue=queue, confidence=0.91)
    edited = request_make(queue=queue, confidence=0.92)
    rejected = request_make(queue=queue, confidence=0.93)
    expired = request_make(queue=queue, confidence=0.94)
    unstated = request_make(queue=queue, confidence=None)
    sandboxed = request_make(queue=queue, confidence=0.95)
    Run.objects.filter(pk=sandboxed.run_id).update(purpose=RunPurpose.EVAL)

    services.approval_approve(request_id=approved.pk, user=reviewer, seen_hash=approved.args_hash)
    services.approval_edit(
        request_id=edited.pk,
        user=reviewer,
        seen_hash=edited.args_hash,
        arguments={**edited.arguments, "amount": "10.00"},
    )
    services.approval_reject(request_id=rejected.pk, user=reviewer, feedback="Not this one.")
    for request in (unstated, sandboxed):
        services.approval_approve(request_id=request.pk, user=reviewer, seen_hash=request.args_hash)
    ApprovalRequest.objects.filter(pk=expired.pk).update(due_at=timezone.now() - timedelta(1))
    queue.expiry_outcome = "approve"
    queue.save()
    services.approvals_expire_overdue()

    found = labels_for(agent_name="support", tool="issue_refund")
    assert sorted(found.labels, key=lambda label: label.confidence) == [
        Labelled(0.91, True),
        Labelled(0.92, False),
        Labelled(0.93, False),
    ]
    assert labels_for(agent_name="support", tool="send_reply").labels == []


def test_the_report_command_prints_the_table_and_says_what_is_missing(
    db: None, capsys: Any
) -> None:
    reviewer = user_make("rita")
    queue = queue_make("refunds", deciders=(reviewer,))
    for _ in range(3):
        request = request_make(queue=queue, confidence=0.97)
        services.approval_approve(request_id=request.pk, user=reviewer, seen_hash=request.args_hash)
    out = StringIO()
    call_command(
        "calibration", "report", "--agent", "support", "--tool", "issue_refund", stdout=out
    )
    text = out.getvalue()
    assert "support / issue_refund: 3 labelled calls" in text
    assert "0.9-1.0         3  0.970   1.000" in text
    assert "no recommendation: 3 labelled calls; a threshold needs at least 100" in text
    with pytest.raises(CommandError, match="has no tool 'nope'"):
        call_command("calibration", "report", "--agent", "support", "--tool", "nope")
    with pytest.raises(CommandError, match="alpha"):
        call_command("calibration", "report", "--agent", "support", "--alpha", "2")
