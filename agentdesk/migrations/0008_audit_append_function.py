"""PostgreSQL appends a batch of audit events to the chain in one call. Nothing on SQLite.

``agentdesk_audit_append(events jsonb)`` takes the chain's advisory lock, reads the head,
and for each event (in order) gives it the next ``seq``, the time the application gave it
(``at``: its host's clock) or the head's when that is later (clocks of hosts differ; time
must follow ``seq``), the head's hash as ``prev_hash``, and
``hash = sha256`` of its canonical JSON, which audit.log prepares in four parts
around the three values only the lock holder knows (created_at, prev_hash, seq), so the
hash is byte for byte the one ``audit.log.event_hash`` computes and
``audit_verify`` checks. Why: the lock is held until the caller commits, and with the
append in one statement the holder makes no round trip to the database and no Python work
while holding it (docs/audit.md, docs/benchmarks.md).

The function is VOLATILE (the default), so in READ COMMITTED its SELECT of the head takes a
snapshot after the lock is granted and sees the previous holder's committed event.
"""

from django.db import migrations

from agentdesk.migration_operations import run_sql_on_postgresql

FORWARD = """
CREATE FUNCTION agentdesk_audit_append(events jsonb)
RETURNS TABLE (
    event_id bigint, event_seq bigint, event_at timestamptz, event_prev varchar, event_hash varchar
)
LANGUAGE plpgsql AS $$
DECLARE
    event jsonb;
    next_seq bigint;
    moment timestamptz;
    prev varchar;
    canonical text;
BEGIN
    PERFORM pg_advisory_xact_lock(418581342580);
    SELECT a.seq, a.hash, a.created_at INTO next_seq, prev, moment
        FROM agentdesk_auditevent a ORDER BY a.seq DESC LIMIT 1;
    next_seq := coalesce(next_seq, 0);
    prev := coalesce(prev, repeat('0', 64));
    FOR event IN SELECT value FROM jsonb_array_elements(events) LOOP
        next_seq := next_seq + 1;
        moment := greatest((event->>'at')::timestamptz, moment);
        canonical := (event->'parts'->>0)
            || to_char(moment AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00'
            || (event->'parts'->>1) || prev
            || (event->'parts'->>2) || next_seq::text
            || (event->'parts'->>3);
        event_seq := next_seq;
        event_at := moment;
        event_prev := prev;
        event_hash := encode(sha256(convert_to(canonical, 'UTF8')), 'hex');
        INSERT INTO agentdesk_auditevent AS e (
            seq, created_at, actor_id, actor_label, verb, object_type, object_id,
            before, after, trace_id, prev_hash, hash
        ) VALUES (
            next_seq, moment, (event->>'actor_id')::integer, event->>'actor_label',
            event->>'verb', event->>'object_type', event->>'object_id',
            nullif(event->'before', 'null'::jsonb), nullif(event->'after', 'null'::jsonb),
            event->>'trace_id', prev, event_hash
        ) RETURNING e.id INTO event_id;
        prev := event_hash;
        RETURN NEXT;
    END LOOP;
END;
$$;
"""

BACKWARD = "DROP FUNCTION IF EXISTS agentdesk_audit_append(jsonb);"


class Migration(migrations.Migration):
    dependencies = [("agentdesk", "0007_prompt_versions")]

    operations = [run_sql_on_postgresql(FORWARD, BACKWARD)]
