"""Chain the events written before the chain existed, in the order they were written (id).

Before this migration the table had no trigger, so the rows are filled in place here;
from 0005 on no row is ever updated again.
"""

from typing import Any

from django.db import migrations

BATCH = 2000


def chain(apps: Any, schema_editor: Any) -> None:
    from audit.log import GENESIS_HASH, stored_hash

    AuditEvent = apps.get_model("agentdesk", "AuditEvent")
    prev_hash, seq, last_id = GENESIS_HASH, 0, 0
    while True:
        batch = list(AuditEvent.objects.filter(id__gt=last_id).order_by("id")[:BATCH])
        if not batch:
            return
        for event in batch:
            seq += 1
            event.seq = seq
            event.prev_hash = prev_hash
            event.hash = stored_hash(event)
            prev_hash = event.hash
        AuditEvent.objects.bulk_update(batch, ["seq", "prev_hash", "hash"])
        last_id = batch[-1].id


class Migration(migrations.Migration):
    dependencies = [("agentdesk", "0002_auditevent_chain_fields")]

    operations = [migrations.RunPython(chain, migrations.RunPython.noop)]
