"""AuditEvent now belongs to the audit app (audit migration 0001): state only, no table change."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("agentdesk", "0009_apitoken_expiry_and_revocation"),
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="AuditEvent")],
            database_operations=[],
        ),
    ]
