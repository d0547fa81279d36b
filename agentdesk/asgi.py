"""ASGI entry point: HTTP through Django; websockets join here as the live pages arrive."""

import os

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentdesk.settings")

application = ProtocolTypeRouter({"http": get_asgi_application()})
