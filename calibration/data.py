"""The labelled calls: what people decided of the calls the policy sent them.

Every reviewed call of a live run is a label (runs.models.Action, whose decision wrote its
outcome onto it): approved unchanged = agreed; edited or rejected = disagreed. An expired
default is no label (nobody decided), nor is a call without a stated confidence (it can
never run on a threshold). Sandboxed runs (evals, shadows) are never labels: nobody
reviews them.
"""

from __future__ import annotations

from dataclasses import dataclass

from calibration.stats import Labelled
from runs.models import Action, ReviewOutcome, RunPurpose

AGREED = ReviewOutcome.APPROVED
DISAGREED = (ReviewOutcome.EDITED, ReviewOutcome.REJECTED)


@dataclass(frozen=True)
class LabelSet:
    agent_name: str
    tool: str | None
    release: int | None
    labels: list[Labelled]


def labels_for(*, agent_name: str, tool: str | None = None, release: int | None = None) -> LabelSet:
    """The agent's labelled calls, of one tool and one release when named."""
    rows = Action.objects.filter(
        run__agent_name=agent_name,
        run__purpose=RunPurpose.LIVE,
        verdict="review",
        review_outcome__in=[AGREED, *DISAGREED],
        confidence__isnull=False,
    )
    if tool is not None:
        rows = rows.filter(tool=tool)
    if release is not None:
        rows = rows.filter(run__release__number=release)
    labels = [
        Labelled(confidence=float(confidence), agreed=outcome == AGREED)
        for confidence, outcome in rows.values_list("confidence", "review_outcome")
        if confidence is not None  # filtered above; the type does not know
    ]
    return LabelSet(agent_name, tool, release, labels)
