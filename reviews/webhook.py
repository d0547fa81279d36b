"""The review webhook: one signed event per POST, sent by its own task with retries.

``webhook_post`` sends one event, signed with HMAC-SHA256 over the exact body bytes; the
task ``review_webhook_send`` runs it and retries with backoff, so a receiver that is down
never holds up a sweep (reviews.notify enqueues the events, after the commit that made
each true). A module of its own, below both: reviews.notify enqueues through it and
reviews.tasks runs notify's sweeps, so neither imports the other.

Secrets never reach a log line: not the webhook secret, and not the webhook URL either
(chat tools put their tokens in it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

from celery import Task, shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-AgentDesk-Signature"
TIMESTAMP_HEADER = "X-AgentDesk-Timestamp"
WEBHOOK_BACKOFF_FACTOR_S = 2
WEBHOOK_BACKOFF_MAX_S = 600


class WebhookFailed(Exception):
    """The receiver did not take the event, and may later: a network error, a 5xx, 408, 429."""


class WebhookRefused(Exception):
    """The receiver refused the event (another 4xx, or a redirect); retrying will not help."""


def webhook_enqueue(payload: dict[str, Any]) -> None:
    """Hand one event to its task. Called after the commit that made the event true."""
    review_webhook_send.delay(payload)


def webhook_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def webhook_signature(body: bytes, secret: str) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the exact body bytes, keyed with the shared secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would turn the POST into a GET, or send the body elsewhere: refuse it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def webhook_post(payload: dict[str, Any]) -> int | None:
    """POST one signed event to AGENTDESK_REVIEW_WEBHOOK_URL; the HTTP status it got.

    The body carries the send time as ``timestamp`` (also in the X-AgentDesk-Timestamp
    header), so the signature covers it and a receiver can refuse replays. Returns None
    when no webhook is configured (any more).
    """
    url = settings.AGENTDESK_REVIEW_WEBHOOK_URL
    if not url:
        return None
    timestamp = int(time.time())
    body = webhook_body({**payload, "timestamp": timestamp})
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "AgentDesk-Webhook/1",
            SIGNATURE_HEADER: webhook_signature(body, settings.AGENTDESK_REVIEW_WEBHOOK_SECRET),
            TIMESTAMP_HEADER: str(timestamp),
        },
    )
    try:
        with _opener.open(request, timeout=settings.AGENTDESK_REVIEW_WEBHOOK_TIMEOUT_S) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except (urllib.error.URLError, OSError) as exc:
        # The exception's text can name the host; the class is enough to act on.
        raise WebhookFailed(f"{payload['event']}: {type(exc).__name__}") from None
    if 200 <= status < 300:
        return status
    if status >= 500 or status in (408, 429):
        raise WebhookFailed(f"{payload['event']}: HTTP {status}")
    raise WebhookRefused(f"{payload['event']}: HTTP {status}")


@shared_task(
    # Its name from when it lived in reviews.tasks: messages already queued keep working.
    name="reviews.tasks.review_webhook_send",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def review_webhook_send(self: Task[Any, Any], payload: dict[str, Any]) -> int | None:
    """POST one event to the review webhook; retried with exponential backoff and jitter.

    At least once: a worker killed after the POST sends it again, with the same
    ``event_id``, which receivers use to drop duplicates. After the last retry, or when the
    receiver refuses the event (a 4xx), the failure is logged and the event dropped: a
    reminder is a courtesy, and the request itself is unaffected.
    """
    try:
        return webhook_post(payload)
    except WebhookRefused as exc:
        log.error("review webhook refused %s for request %s", exc, payload.get("request_id"))
        return None
    except WebhookFailed as exc:
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
