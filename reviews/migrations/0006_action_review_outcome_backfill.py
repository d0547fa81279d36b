"""Write the outcome of every call already decided onto its action (runs/0012).

Until now the resumed step read a call's decision from its approval request; it now reads
the action only, so a run parked before the upgrade and resumed after it, or a call
approved before it and run after, must find its outcome there. Here, not in runs/: the
data comes from the requests and decisions of this app, and the runtime's migrations do
not depend on it.

Who decided: the person of the last decision that was not an escalation (the SLA clock's
expiry has none). Outcomes outside the five known ones are left alone.
"""

from typing import Any

from django.db import migrations

GRANTED = {"approved", "edited", "expired_approved"}
KNOWN = GRANTED | {"rejected", "expired_rejected"}


def backfill(apps: Any, schema_editor: Any) -> None:
    ApprovalRequest = apps.get_model("reviews", "ApprovalRequest")
    Decision = apps.get_model("reviews", "Decision")
    Action = apps.get_model("runs", "Action")
    decided = ApprovalRequest.objects.filter(
        action__isnull=False,
        action__review_outcome="",
        state__in=["approved", "rejected", "expired"],
        outcome__in=sorted(KNOWN),
    )
    for request in decided.iterator():
        last = (
            Decision.objects.filter(request=request)
            .exclude(kind="escalate")
            .order_by("-id")
            .first()
        )
        granted = request.outcome in GRANTED
        Action.objects.filter(pk=request.action_id, review_outcome="").update(
            review_outcome=request.outcome,
            approved_arguments=request.arguments if granted else None,
            approved_args_hash=request.args_hash if granted else "",
            review_feedback="" if granted else request.feedback,
            decided_by_id=last.decided_by_id if last is not None else None,
            decided_at=request.decided_at,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("reviews", "0005_request_outcome_choices"),
        ("runs", "0012_action_review_outcome"),
    ]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
