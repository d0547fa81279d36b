"""ASGI entry point: HTTP through Django, websockets through Channels.

Websockets are authenticated from the Django session cookie and accepted only from this
site's own origins (ALLOWED_HOSTS), so another site cannot open a socket with a
reviewer's cookie.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentdesk.settings")

# Django must be set up before anything imports models (the consumers do).
django_application = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import re_path  # noqa: E402

from agentdesk.sockets import UnknownPathConsumer  # noqa: E402
from reviews.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(
                # Last: a path no route matches is closed with 4404, not a 500.
                URLRouter([*websocket_urlpatterns, re_path(r"", UnknownPathConsumer.as_asgi())])
            )
        ),
    }
)
