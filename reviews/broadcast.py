"""Tell open inboxes that a queue changed, after the change commits.

Domain change → on commit → channel-layer group of the queue → every websocket consumer
of that queue → the browser re-fetches its list (one markup source: the server renders
it). The message carries ids only, never request content, so a consumer can forward it
to anyone allowed to see the queue without rendering per user.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 10.0


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
        _run(
            layer.group_send(
                queue_group(queue_id),
                {"type": "queue.changed", "request": request_id, "event": event},
            )
        )

    transaction.on_commit(send, robust=True)


class _Sender:
    """One event loop per process, on a thread of its own, that every broadcast runs on.

    Sync code (a service's on-commit hook, on a worker's step thread or a web request's)
    reaches the async channel layer through it. ``async_to_sync`` would make a new event
    loop for each call, and the Redis channel layer a new connection for each loop:
    2.6 ms of CPU a broadcast, against 0.36 ms on a loop that is kept (and its layer's
    connection with it; measured, docs/benchmarks.md). Made on first use, and made again
    in a process forked after that (the thread does not survive a fork).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="broadcast", daemon=True).start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop


_sender = _Sender()


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run ``coroutine`` on the process's broadcast loop and wait for it (its errors raise)."""
    future = asyncio.run_coroutine_threadsafe(coroutine, _sender.loop())
    try:
        future.result(timeout=SEND_TIMEOUT_S)
    except TimeoutError:
        future.cancel()  # a layer that hangs must not collect sends on the loop
        raise
