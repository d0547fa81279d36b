"""PostgreSQL refuses UPDATE, DELETE and TRUNCATE on the audit log. Nothing on SQLite.

The trigger stops every writer that goes through SQL as the application's role (the ORM,
a shell, a bad migration). Someone who owns the table can still disable it; the hash chain
(``manage.py audit_verify``) is what makes such tampering visible.
"""

from django.db import migrations

from agentdesk.migration_operations import run_sql_on_postgresql

FORWARD = """
CREATE FUNCTION agentdesk_auditevent_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on agentdesk_auditevent is refused', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'Audit events are never changed or removed; record a new event instead.';
END;
$$;
CREATE TRIGGER agentdesk_auditevent_no_update_delete
    BEFORE UPDATE OR DELETE ON agentdesk_auditevent
    FOR EACH ROW EXECUTE FUNCTION agentdesk_auditevent_refuse_change();
CREATE TRIGGER agentdesk_auditevent_no_truncate
    BEFORE TRUNCATE ON agentdesk_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION agentdesk_auditevent_refuse_change();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS agentdesk_auditevent_no_truncate ON agentdesk_auditevent;
DROP TRIGGER IF EXISTS agentdesk_auditevent_no_update_delete ON agentdesk_auditevent;
DROP FUNCTION IF EXISTS agentdesk_auditevent_refuse_change();
"""


class Migration(migrations.Migration):
    dependencies = [("agentdesk", "0004_auditevent_seq_unique_and_search_indexes")]

    operations = [run_sql_on_postgresql(FORWARD, BACKWARD)]
