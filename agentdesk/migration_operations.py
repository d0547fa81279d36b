"""Operations the project's migrations share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import migrations


def _on_postgresql(sql: str) -> Callable[[Any, Any], None]:
    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)

    return run


def run_sql_on_postgresql(forward: str, backward: str) -> migrations.RunPython:
    """SQL only PostgreSQL gets (functions, triggers): SQLite, the embedded mode, has no such
    thing and is left as it is. ``params=None``: the SQL's own % signs are not placeholders."""
    return migrations.RunPython(_on_postgresql(forward), _on_postgresql(backward))
