"""How PostgreSQL stores runs, for the UPDATE every step makes (docs/benchmarks.md).

1. Checkpoints compressed with lz4 instead of pglz, where PostgreSQL has lz4: every step
   rewrites its run's checkpoint (the conversation, several kilobytes, so stored
   compressed), and pglz was most of that UPDATE's own time. Only values written from now
   on use it; both read back alike.
2. A fill factor of 80: room on each page for the new version of a row, so that a step's
   UPDATE, which changes no indexed column, can be a HOT update (no new entry in each of
   the table's ten indexes).

SQLite (the embedded mode) is left as it is.
"""

from django.db import migrations


def _postgresql_lz4(schema_editor) -> tuple[bool, bool]:  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return False, False
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        )
        row = cursor.fetchone()
    return True, bool(row and row[0])


def tune(apps, schema_editor) -> None:  # type: ignore[no-untyped-def]
    postgresql, lz4 = _postgresql_lz4(schema_editor)
    if postgresql:
        schema_editor.execute('ALTER TABLE "runs_run" SET (fillfactor = 80)')
    if lz4:
        schema_editor.execute(
            'ALTER TABLE "runs_run" ALTER COLUMN "checkpoint" SET COMPRESSION lz4'
        )


def untune(apps, schema_editor) -> None:  # type: ignore[no-untyped-def]
    postgresql, lz4 = _postgresql_lz4(schema_editor)
    if postgresql:
        schema_editor.execute('ALTER TABLE "runs_run" RESET (fillfactor)')
    if lz4:
        schema_editor.execute(
            'ALTER TABLE "runs_run" ALTER COLUMN "checkpoint" SET COMPRESSION pglz'
        )


class Migration(migrations.Migration):
    dependencies = [("runs", "0005_run_config_version")]

    operations = [migrations.RunPython(tune, untune)]
