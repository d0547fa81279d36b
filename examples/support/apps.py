"""App configuration for the example support shop."""

from __future__ import annotations

from django.apps import AppConfig


class SupportConfig(AppConfig):
    """The demo shop behind the bundled support agent."""

    name = "examples.support"
    label = "support"
    verbose_name = "Example: support shop"
    default_auto_field = "django.db.models.BigAutoField"
