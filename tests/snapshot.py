"""A fingerprint of every table, to assert that a refused request wrote nothing.

One query: per table, its row count and an md5 of all its rows as text, so an update is
seen as well as an insert or a delete. Sessions and API tokens are left out: logging a
test client in writes a session, and every use of a token records when it was last used;
neither is the product's data a refused request could damage.
"""

from __future__ import annotations

from django.apps import apps
from django.db import connection

SKIPPED_TABLES = frozenset({"django_session", "agentdesk_apitoken"})


def _tables() -> list[str]:
    tables = {
        model._meta.db_table
        for model in apps.get_models(include_auto_created=True)
        if model._meta.managed and not model._meta.proxy
    }
    return sorted(tables - SKIPPED_TABLES)


def db_snapshot() -> dict[str, tuple[int, str]]:
    """{table: (rows, md5 of the rows)}; PostgreSQL only, as the suite is."""
    tables = _tables()
    parts = [
        "(SELECT ARRAY[count(*)::text,"
        " coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '')]"
        f" FROM {connection.ops.quote_name(table)} t)"
        for table in tables
    ]
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(parts))
        row = cursor.fetchone()
    return {table: (int(value[0]), value[1]) for table, value in zip(tables, row, strict=True)}


def changed_tables(
    before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]]
) -> list[str]:
    return sorted(table for table in before if before[table] != after.get(table))
