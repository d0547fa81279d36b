"""Audit verbs and request outcomes are one list each (AuditVerb, RequestOutcome).

The stored values are the strings written before they were TextChoices, so the log and
the requests already stored read the same; what code writes is a member of the list.
"""

from __future__ import annotations

import re

import pytest
from django.db import transaction

from audit.log import audit_batch, audit_chain_verify, audit_record
from audit.models import AuditEvent, AuditVerb
from reviews.models import ApprovalRequest, DecisionKind, RequestOutcome
from runs.models import ActionStatus, DeadLetterStatus, RunState
from tests.processes import ROOT

_APPS = ("agentdesk", "agents", "audit", "policy", "releases", "runs", "reviews", "examples")
# A verb written as text: ``verb="run.started"``, or either side of ``verb="a" if x else "b"``.
_VERB_LINE = re.compile(r"\bverb=.*")
_DOTTED = re.compile(r"\"([a-z_]+\.[a-z_]+)\"")


def test_every_verb_the_code_writes_as_text_is_in_the_list() -> None:
    written: dict[str, str] = {}
    for app in _APPS:
        for source in (ROOT / app).rglob("*.py"):  # a package not there yet reads as empty
            if "migrations" in source.parts:
                continue
            for line in _VERB_LINE.findall(source.read_text()):
                for verb in _DOTTED.findall(line):
                    written[verb] = str(source.relative_to(ROOT))
    unknown = {verb: where for verb, where in written.items() if verb not in AuditVerb.values}
    assert unknown == {}


def test_every_composed_verb_has_its_member() -> None:
    """``run.<state>``, ``action.<status>``, ``dead_letter.<status>``, ``request.<kind>``.

    AuditVerb(f"...") would raise for a state without one, in the transaction of the change.
    """
    composed = [
        *(f"run.{state}" for state in RunState),
        *(f"action.{status}" for status in ActionStatus),
        *(f"dead_letter.{s}" for s in (DeadLetterStatus.REQUEUED, DeadLetterStatus.DISCARDED)),
        *(f"request.{kind}" for kind in (DecisionKind.APPROVE, DecisionKind.EDIT)),
    ]
    assert [AuditVerb(verb).value for verb in composed] == composed


def test_the_values_are_the_strings_stored_before() -> None:
    assert sorted(RequestOutcome.values) == [
        "approved",
        "edited",
        "expired_approved",
        "expired_rejected",
        "rejected",
    ]
    outcome = ApprovalRequest._meta.get_field("outcome")
    assert (outcome.blank, outcome.max_length) == (True, 20)  # pending: blank, as before
    assert (AuditVerb.RUN_SUBMITTED, AuditVerb.REQUEST_APPROVE) == (
        "run.submitted",
        "request.approve",
    )
    assert len(AuditVerb.values) == len(set(AuditVerb.values)) == 65
    assert (AuditVerb.RELEASE_CREATED, AuditVerb.RELEASE_LABEL_MOVED) == (
        "release.created",
        "release.label_moved",
    )


# Not a member's value: a verb no list has, a member's name, the value changed in case or
# padded, nothing at all.
@pytest.mark.parametrize(
    "verb", ["run.exploded", "RUN_SUBMITTED", "Run.Submitted", "run.submitted ", ""]
)
@pytest.mark.django_db
def test_audit_record_refuses_a_verb_not_in_the_list_and_writes_nothing(verb: str) -> None:
    message = rf"unknown audit verb {re.escape(repr(verb))}: .*audit\.models\.AuditVerb"
    with transaction.atomic():
        with pytest.raises(ValueError, match=message):
            audit_record(actor=None, verb=verb, object_type="run", object_id="1")  # type: ignore[arg-type]
        with audit_batch() as collected, pytest.raises(ValueError, match=message):
            audit_record(actor=None, verb=verb, object_type="run", object_id="2")  # type: ignore[arg-type]
        assert collected == []

    assert AuditEvent.objects.count() == 0


@pytest.mark.django_db
def test_audit_record_takes_a_members_exact_value_as_the_member() -> None:
    with transaction.atomic():
        event = audit_record(actor=None, verb="run.submitted", object_type="run", object_id="1")  # type: ignore[arg-type]

    assert event.verb is AuditVerb.RUN_SUBMITTED
    assert list(AuditEvent.objects.values_list("seq", "verb", "object_id")) == [
        (1, "run.submitted", "1")
    ]
    assert audit_chain_verify().as_dict()["intact"] is True
