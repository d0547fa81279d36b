"""Celery tasks of the SLA clock: thin, take ids or plain data, safe to run twice.

Beat runs ``approvals_expire`` and ``approvals_remind`` every AGENTDESK_SLA_SWEEP_S
seconds, on as many beat hosts as there are: the sweeps lock or compare-and-set each row
(see reviews.notify), so a second copy of a tick finds nothing left to do. The webhook's
task, ``review_webhook_send``, lives with the webhook (reviews.webhook) and is listed here
for Celery's discovery.
"""

from __future__ import annotations

from celery import shared_task

from reviews import notify
from reviews.webhook import review_webhook_send

__all__ = ["approvals_expire", "approvals_remind", "review_webhook_send"]


@shared_task(ignore_result=True)
def approvals_expire() -> int:
    """Escalate or decide overdue requests, then announce each on the webhook."""
    return notify.approvals_expire_announced()


@shared_task(ignore_result=True)
def approvals_remind() -> int:
    """Remind the deciders of requests close to their due time, once per request."""
    return len(notify.approvals_remind_due())
