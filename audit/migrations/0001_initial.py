"""The audit log moves here from the agentdesk app: state only, the table keeps its name.

No row moves and nothing is locked: the table, its indexes, its append-only trigger and
its append function (agentdesk migrations 0005 and 0008) stay as they are. The content
type moves with the model, so the permissions granted on it (view_auditevent, now in
the audit app) stay granted.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def move_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label="audit", model="auditevent").exists():
        ContentType.objects.filter(app_label="agentdesk", model="auditevent").update(
            app_label="audit"
        )


def move_content_type_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label="agentdesk", model="auditevent").exists():
        ContentType.objects.filter(app_label="audit", model="auditevent").update(
            app_label="agentdesk"
        )


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("contenttypes", "0002_remove_content_type_name"),
        ("agentdesk", "0009_apitoken_expiry_and_revocation"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='AuditEvent',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('seq', models.BigIntegerField(unique=True)),
                        ('created_at', models.DateTimeField(db_index=True)),
                        ('actor_label', models.CharField(max_length=150)),
                        ('verb', models.CharField(max_length=64)),
                        ('object_type', models.CharField(max_length=64)),
                        ('object_id', models.CharField(max_length=64)),
                        ('before', models.JSONField(blank=True, null=True)),
                        ('after', models.JSONField(blank=True, null=True)),
                        ('trace_id', models.CharField(blank=True, max_length=32)),
                        ('prev_hash', models.CharField(max_length=64)),
                        ('hash', models.CharField(max_length=64)),
                        ('actor', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'agentdesk_auditevent',
                        'ordering': ['-seq'],
                        'indexes': [models.Index(fields=['object_type', 'object_id', 'seq'], name='audit_object_seq'), models.Index(fields=['actor_label', 'seq'], name='audit_actor_seq'), models.Index(fields=['trace_id', 'seq'], name='audit_trace_seq'), models.Index(fields=['verb', 'seq'], name='audit_verb_seq', opclasses=['varchar_pattern_ops', 'int8_ops'])],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
