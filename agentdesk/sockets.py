"""The websocket answer for a path that matches no route.

Channels' URLRouter raises ValueError("No route found for path ...") for such a path:
Daphne logs a traceback and the browser sees a bare 500 handshake failure. The last route
(agentdesk.asgi) sends it here instead: accepted, then closed with 4404, the code the
queue sockets use for "not found" (reviews.consumers), and one log line.
"""

from __future__ import annotations

import logging

from channels.generic.websocket import AsyncWebsocketConsumer

log = logging.getLogger("agentdesk.sockets")

CLOSE_NOT_FOUND = 4404


class UnknownPathConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        log.info("websocket %r matches no route: closed with %s", self.scope["path"][:200], 4404)
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)
