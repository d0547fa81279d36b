"""Live inboxes: one websocket per queue, forwarding "this request changed" to the browser.

The message carries ids only (see reviews.broadcast); the browser re-fetches the list and,
if it is open, the request's pane, through the ordinary permission-checked views. Access
is checked once, on connect, exactly as the pages check it:

- anonymous: accepted then closed with 4401, so the page can tell "log in" from a dropped
  connection (a refused handshake reaches the browser as a bare 1006);
- no view permission on the queue, or no such queue: closed with 4404;
- otherwise the socket joins the queue's group.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from reviews.broadcast import queue_group
from reviews.models import Queue
from reviews.selectors import can_view

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


@database_sync_to_async
def _may_view(user: Any, queue_id: int) -> bool:
    queue = Queue.objects.filter(pk=queue_id).first()
    return queue is not None and can_view(user=user, queue=queue)


class QueueConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        queue_id = int(self.scope["url_route"]["kwargs"]["queue_id"])
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await _may_view(user, queue_id):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.group = queue_group(queue_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_json({"event": "subscribed", "queue": queue_id})

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The browser only listens; anything it sends is ignored."""

    async def queue_changed(self, message: dict[str, Any]) -> None:
        await self.send_json({"event": message["event"], "request": message["request"]})
