"""ASGI entry point: HTTP through Django, websockets through Channels.

Websockets are authenticated from the Django session cookie and accepted only from this
site's own origins, scheme, host and port compared whole (AGENTDESK_WEBSOCKET_ORIGINS:
the base URL and the trusted origins), so no other page, not even one on another port
of the same host, can open a socket with a reviewer's cookie.
"""

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentdesk.settings")

# Django must be set up before anything imports models (the consumers do).
django_application = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from agentdesk.sockets import UnknownPathConsumer  # noqa: E402
from reviews.routing import websocket_urlpatterns  # noqa: E402


class SiteOriginValidator(OriginValidator):
    """channels' check of the Origin header, refusing a malformed one instead of raising.

    ``http://127.0.0.1:8000.evil.test`` has a port that is not a number; urllib raises
    on reading it, which would end the handshake with a server error, not a refusal.
    """

    def valid_origin(self, parsed_origin: Any) -> bool:
        try:
            return bool(super().valid_origin(parsed_origin))
        except ValueError:
            return False


application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": SiteOriginValidator(
            AuthMiddlewareStack(
                # Last: a path no route matches is closed with 4404, not a 500.
                URLRouter([*websocket_urlpatterns, re_path(r"", UnknownPathConsumer.as_asgi())])
            ),
            settings.AGENTDESK_WEBSOCKET_ORIGINS,
        ),
    }
)
