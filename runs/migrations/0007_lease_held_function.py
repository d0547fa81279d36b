"""PostgreSQL checks a step's lease inside the statement that records it. Nothing on SQLite.

``runs_lease_held(matched bigint)`` raises SQLSTATE ``AD409`` unless ``matched`` is 1. The
step commit (runs.kernel.stepping) sends its compare-and-set UPDATE of the run, the audit append
and the COMMIT as one query string (agentdesk.statements.commit_with); it wraps the UPDATE
so that a lost lease (no row matched) is an error, which aborts the transaction before its
COMMIT, instead of a row count the worker could only read after the COMMIT was sent.
"""

from django.db import migrations

from agentdesk.migration_operations import run_sql_on_postgresql

FORWARD = """
CREATE FUNCTION runs_lease_held(matched bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF matched IS DISTINCT FROM 1 THEN
        RAISE EXCEPTION 'the lease on this step is no longer held' USING ERRCODE = 'AD409';
    END IF;
END;
$$;
"""

BACKWARD = "DROP FUNCTION IF EXISTS runs_lease_held(bigint);"


class Migration(migrations.Migration):
    dependencies = [("runs", "0006_run_storage")]

    operations = [run_sql_on_postgresql(FORWARD, BACKWARD)]
