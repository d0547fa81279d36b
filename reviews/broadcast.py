"""Tell open inboxes that a queue changed, after the change commits.

Domain change → on commit → channel-layer group of the queue → every websocket consumer
of that queue → the browser re-fetches its list (one markup source: the server renders
it). The message carries ids only, never request content, so a consumer can forward it
to anyone allowed to see the queue without rendering per user.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)


def queue_group(queue_id: int) -> str:
    return f"queue.{queue_id}"


def queue_changed(*, queue_id: int, request_id: int, event: str) -> None:
    """Broadcast ``event`` on the queue's group once the current transaction commits.

    ``robust``: a channel layer that is down costs a live update, never the decision;
    open inboxes re-fetch when their socket reconnects.
    """

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        async_to_sync(layer.group_send)(
            queue_group(queue_id),
            {"type": "queue.changed", "request": request_id, "event": event},
        )

    transaction.on_commit(send, robust=True)
