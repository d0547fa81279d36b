"""The calibration page: who reads it, who applies a recommendation, and what a stale or
missing recommendation does (nothing, said so)."""

from __future__ import annotations

from typing import Any

import pytest

from releases import configuration, prompts, services
from releases.models import AgentConfigVersion, ReleaseLabel
from reviews import services as reviews
from tests.releases.pages import client_for
from tests.reviews.factories import queue_make, request_make, user_make

pytestmark = pytest.mark.django_db

PAGE = "/calibration/support/"
QUERY = "?tool=issue_refund&min_labels=10&alpha=0.2"


@pytest.fixture
def labelled(support_queues: None) -> None:
    """Twenty refunds at 0.97 that a reviewer approved as they stood, on release 1."""
    services.release_labels(agent_name="support")
    release = services.release_production(agent_name="support")
    reviewer = user_make("cal")
    queue = queue_make("calibration", deciders=(reviewer,))
    for _ in range(20):
        request = request_make(queue=queue, confidence=0.97)
        request.run.release = release
        request.run.save(update_fields=["release"])
        reviews.approval_approve(request_id=request.pk, user=reviewer, seen_hash=request.args_hash)


@pytest.mark.parametrize(
    ("who", "status"), [("operator", 200), ("auditor", 200), ("reviewer", 403), ("outsider", 403)]
)
def test_who_reads_the_page(
    labelled: None, request: pytest.FixtureRequest, who: str, status: int
) -> None:
    assert client_for(request.getfixturevalue(who)).get(PAGE + QUERY).status_code == status


def test_the_page_shows_the_evidence_and_an_operator_applies_the_recommendation(
    labelled: None, operator: Any
) -> None:
    client = client_for(operator)
    body = client.get(PAGE + QUERY).content.decode()
    assert "Recommended threshold <strong>0.97</strong>" in body
    assert 'id="calibration-data"' in body  # the charts' data, beside their tables
    assert '0.9\u20131.0</td><td class="num">20</td>' in body
    before = AgentConfigVersion.objects.count()

    response = client.post(PAGE + "apply", {"tool": "issue_refund", "min_labels": 10, "alpha": 0.2})

    version = AgentConfigVersion.objects.order_by("-number").first()
    assert version is not None
    assert AgentConfigVersion.objects.count() == before + 1
    assert version.config["thresholds"]["issue_refund"] == 0.97
    assert version.created_by == operator
    assert response["Location"] == f"/agents/support/versions/{version.number}/activate"
    assert services.config_active(agent_name="support").number == 1  # not active until activated


def test_an_auditor_reads_but_may_not_apply(labelled: None, auditor: Any) -> None:
    client = client_for(auditor)
    assert "Save as a new configuration version" not in client.get(PAGE + QUERY).content.decode()
    before = AgentConfigVersion.objects.count()
    assert (
        client.post(PAGE + "apply", {"tool": "issue_refund", "min_labels": 10}).status_code == 403
    )
    assert AgentConfigVersion.objects.count() == before


def test_without_enough_labels_nothing_is_applied_and_the_page_says_how_many_more(
    labelled: None, operator: Any
) -> None:
    client = client_for(operator)
    assert "80 more labelled calls" in client.get(PAGE + "?tool=issue_refund").content.decode()
    before = AgentConfigVersion.objects.count()
    response = client.post(PAGE + "apply", {"tool": "issue_refund"})
    assert response.status_code == 302
    assert AgentConfigVersion.objects.count() == before


def test_a_recommendation_of_another_release_is_stale_and_cannot_be_applied(
    labelled: None, operator: Any
) -> None:
    prompts.prompt_version_create(
        agent_name="support",
        template=prompts.prompt_version_first(agent_name="support").template + "\nShort.",
        note="p",
        user=operator,
    )
    release = services.release_make(
        agent_name="support",
        prompt_number=2,
        config_number=configuration.config_version_first(agent_name="support").number,
        user=operator,
    )
    # Production moves to release 2 (the gate is not what this test is about).
    ReleaseLabel.objects.filter(agent_name="support", label="production").update(release=release)
    client = client_for(operator)
    body = client.get(PAGE + QUERY + "&release=1").content.decode()
    assert "stale" in body
    assert "Save as a new configuration version" not in body
    before = AgentConfigVersion.objects.count()
    client.post(
        PAGE + "apply", {"tool": "issue_refund", "release": 1, "min_labels": 10, "alpha": 0.2}
    )
    assert AgentConfigVersion.objects.count() == before


def test_bad_knobs_are_a_400_and_unknown_things_404(labelled: None, operator: Any) -> None:
    client = client_for(operator)
    assert client.get(PAGE + "?alpha=7").status_code == 400
    assert client.get(PAGE + "?tool=nope").status_code == 404
    assert client.get(PAGE + "?release=99").status_code == 404
    assert client.get("/calibration/nobody/").status_code == 404
    anonymous = client_for(None).get(PAGE)
    assert anonymous.status_code == 302
