"""Celery tasks of the SLA clock: thin, take ids or plain data, safe to run twice.

Beat runs ``approvals_expire`` and ``approvals_remind`` every AGENTDESK_SLA_SWEEP_S
seconds, on as many beat hosts as there are: the sweeps lock or compare-and-set each row
(see reviews.notify), so a second copy of a tick finds nothing left to do.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings

from reviews import notify

log = logging.getLogger(__name__)

WEBHOOK_BACKOFF_FACTOR_S = 2
WEBHOOK_BACKOFF_MAX_S = 600


@shared_task(ignore_result=True)
def approvals_expire() -> int:
    """Escalate or decide overdue requests, then announce each on the webhook."""
    return notify.approvals_expire_announced()


@shared_task(ignore_result=True)
def approvals_remind() -> int:
    """Remind the deciders of requests close to their due time, once per request."""
    return len(notify.approvals_remind_due())


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def review_webhook_send(self: Task[Any, Any], payload: dict[str, Any]) -> int | None:
    """POST one event to the review webhook; retried with exponential backoff and jitter.

    At least once: a worker killed after the POST sends it again, with the same
    ``event_id``, which receivers use to drop duplicates. After the last retry, or when the
    receiver refuses the event (a 4xx), the failure is logged and the event dropped: a
    reminder is a courtesy, and the request itself is unaffected.
    """
    try:
        return notify.webhook_post(payload)
    except notify.WebhookRefused as exc:
        log.error("review webhook refused %s for request %s", exc, payload.get("request_id"))
        return None
    except notify.WebhookFailed as exc:
        retries = self.request.retries
        if retries >= settings.AGENTDESK_REVIEW_WEBHOOK_RETRIES:
            log.error(
                "review webhook gave up on %s for request %s after %s attempts",
                exc,
                payload.get("request_id"),
                retries + 1,
            )
            return None
        countdown = get_exponential_backoff_interval(
            factor=WEBHOOK_BACKOFF_FACTOR_S,
            retries=retries,
            maximum=WEBHOOK_BACKOFF_MAX_S,
            full_jitter=True,
        )
        log.warning(
            "review webhook failed (%s) for request %s; retry %s in %s s",
            exc,
            payload.get("request_id"),
            retries + 1,
            countdown,
        )
        raise self.retry(exc=exc, countdown=countdown, max_retries=None) from None
