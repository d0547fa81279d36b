"""Broadcasts after commit: many threads at once, a channel layer that is down, a fork.

Against the Redis channel layer production uses (the inbox's consumers: test_websocket).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, transaction

from reviews import broadcast, services
from reviews.models import ApprovalRequest, RequestState
from tests.reviews.factories import queue_make, request_make, user_make

pytestmark = pytest.mark.django_db(transaction=True)


def test_broadcasts_from_many_threads_at_once_all_arrive():
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(broadcast.queue_group(7), channel)

    def announce(request_id: int) -> None:
        try:
            with transaction.atomic():
                broadcast.queue_changed(queue_id=7, request_id=request_id, event="opened")
        finally:
            connection.close()  # back to the pool, which has fewer than 20

    threads = [threading.Thread(target=announce, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    async def receive_all() -> list[int]:
        return [(await layer.receive(channel))["request"] for _ in range(20)]

    assert sorted(async_to_sync(receive_all)()) == list(range(20))
    async_to_sync(layer.group_discard)(broadcast.queue_group(7), channel)


def test_nothing_is_sent_before_the_commit_or_after_a_rollback():
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(broadcast.queue_group(8), channel)

    def undone() -> None:
        with transaction.atomic():
            broadcast.queue_changed(queue_id=8, request_id=1, event="opened")
            raise RuntimeError("the change is undone")

    with pytest.raises(RuntimeError):
        undone()
    with transaction.atomic():
        broadcast.queue_changed(queue_id=8, request_id=2, event="opened")

    async def first() -> dict[str, Any]:
        return await asyncio.wait_for(layer.receive(channel), timeout=5)

    assert async_to_sync(first)() == {"type": "queue.changed", "request": 2, "event": "opened"}
    async_to_sync(layer.group_discard)(broadcast.queue_group(8), channel)


def test_a_channel_layer_that_is_down_costs_the_update_not_the_decision(
    settings: Any, caplog: pytest.LogCaptureFixture
):
    reviewer = user_make("rita")
    request = request_make(queue=queue_make("queue-a", deciders=(reviewer,)))
    # Nothing listens on port 1: every send fails at once.
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
        }
    }
    with caplog.at_level(logging.ERROR):
        services.approval_approve(request_id=request.pk, user=reviewer, seen_hash=request.args_hash)
    assert ApprovalRequest.objects.get(pk=request.pk).state == RequestState.APPROVED
    assert "on_commit" in caplog.text
    assert "send" in caplog.text


def test_a_forked_process_gets_a_broadcast_loop_of_its_own():
    loop = broadcast._sender.loop()
    assert broadcast._sender.loop() is loop
    pid = os.fork()
    if pid == 0:  # the child: the parent's loop thread did not survive the fork
        try:
            child_loop = broadcast._sender.loop()
            ran = asyncio.run_coroutine_threadsafe(asyncio.sleep(0, result=1), child_loop)
            os._exit(0 if child_loop is not loop and ran.result(timeout=5) == 1 else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
