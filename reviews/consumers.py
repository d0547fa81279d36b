"""Live inboxes: one websocket per queue, forwarding "this request changed" to the browser.

The message carries ids only (see reviews.broadcast); the browser re-fetches the list and,
if it is open, the request's pane, through the ordinary permission-checked views.

Access is checked on connect and again before every event is sent, from the session as
it is stored now, not as it was when the socket opened: a person who logged out, whose
session was cut (a password change, deactivation), or whose view of the queue was
revoked, is closed on the next event and told nothing of it. One check for both:

- no valid session (anonymous, logged out, inactive): accepted then closed with 4401, so
  the page can tell "log in" from a dropped connection (a refused handshake reaches the
  browser as a bare 1006);
- no view permission on the queue, or no such queue: closed with 4404;
- otherwise the socket joins the queue's group (on connect) or sends the event.

Re-checking costs a few queries per event and open socket; events are rare next to page
reads (one per request opened or decided), and it is the only check that holds across
processes: a revocation made in the admin, by a command or in another web process is seen
without any of them knowing which sockets are open.
"""

from __future__ import annotations

from importlib import import_module
from types import SimpleNamespace
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user

from reviews.broadcast import queue_group
from reviews.models import Queue
from reviews.selectors import can_view

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


@database_sync_to_async
def _refusal(session_key: str | None, queue_id: int) -> int | None:
    """The close code if the session's person may not (or no longer) see the queue, else None.

    The session is loaded afresh from its store, and the user through Django's own
    ``get_user``, which also verifies the session's password hash and the active flag.
    """
    if not session_key:
        return CLOSE_UNAUTHENTICATED
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)
    user = get_user(SimpleNamespace(session=session))  # type: ignore[arg-type]
    if not user.is_authenticated:
        return CLOSE_UNAUTHENTICATED
    queue = Queue.objects.filter(pk=queue_id).first()
    if queue is None or not can_view(user=user, queue=queue):
        return CLOSE_NOT_FOUND
    return None


class QueueConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None
    queue_id: int = 0
    session_key: str | None = None

    async def connect(self) -> None:
        self.queue_id = int(self.scope["url_route"]["kwargs"]["queue_id"])
        session = self.scope.get("session")
        self.session_key = session.session_key if session is not None else None
        await self.accept()
        refusal = await _refusal(self.session_key, self.queue_id)
        if refusal is not None:
            await self.close(code=refusal)
            return
        self.group = queue_group(self.queue_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_json({"event": "subscribed", "queue": self.queue_id})

    async def disconnect(self, code: int) -> None:
        await self._leave()

    async def _leave(self) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The browser only listens; anything it sends is ignored."""

    async def queue_changed(self, message: dict[str, Any]) -> None:
        if self.group is None:  # already closed for a refusal: say nothing more
            return
        refusal = await _refusal(self.session_key, self.queue_id)
        if refusal is not None:
            await self._leave()
            await self.close(code=refusal)
            return
        await self.send_json({"event": message["event"], "request": message["request"]})
