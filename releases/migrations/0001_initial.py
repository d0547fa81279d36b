"""Configuration and prompt versions move here from agentdesk; releases and their labels.

The two version models move state only: their tables keep their names, no row moves and
nothing is locked. Their content types move with them, so the permissions granted on
them (view/add/change of each, now in this app) stay granted. The release tables are new.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

MOVED = ("agentconfigversion", "promptversion")
LABELS = [("dev", "Dev"), ("staging", "Staging"), ("production", "Production")]


def move_content_types(apps, schema_editor, source="agentdesk", target="releases"):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MOVED:
        if not ContentType.objects.filter(app_label=target, model=model).exists():
            ContentType.objects.filter(app_label=source, model=model).update(app_label=target)


def move_content_types_back(apps, schema_editor):
    move_content_types(apps, schema_editor, source="releases", target="agentdesk")


def _id():
    return models.BigAutoField(
        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
    )


def _user(null=True):
    return models.ForeignKey(
        blank=null,
        null=null,
        on_delete=django.db.models.deletion.PROTECT,
        related_name="+",
        to=settings.AUTH_USER_MODEL,
    )


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("contenttypes", "0002_remove_content_type_name"),
        ("agentdesk", "0010_auditevent_moved_to_audit"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="AgentConfigVersion",
                    fields=[
                        ("id", _id()),
                        ("agent_name", models.CharField(max_length=64)),
                        ("number", models.PositiveIntegerField()),
                        ("config", models.JSONField()),
                        ("note", models.CharField(blank=True, max_length=500)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("policy_version", models.CharField(max_length=32)),
                        ("created_by", _user()),
                    ],
                    options={
                        "db_table": "agentdesk_agentconfigversion",
                        "ordering": ["agent_name", "-number"],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("agent_name", "number"),
                                name="agent_config_version_unique_number",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(("number__gte", 1)),
                                name="agent_config_version_number_positive",
                            ),
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="PromptVersion",
                    fields=[
                        ("id", _id()),
                        ("agent_name", models.CharField(max_length=64)),
                        ("number", models.PositiveIntegerField()),
                        ("template", models.TextField()),
                        ("note", models.CharField(blank=True, max_length=500)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("content_hash", models.CharField(max_length=64)),
                        ("created_by", _user()),
                    ],
                    options={
                        "db_table": "agentdesk_promptversion",
                        "ordering": ["agent_name", "-number"],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("agent_name", "number"),
                                name="prompt_version_unique_number",
                            ),
                            models.UniqueConstraint(
                                fields=("agent_name", "content_hash"),
                                name="prompt_version_unique_content",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(("number__gte", 1)),
                                name="prompt_version_number_positive",
                            ),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
        migrations.CreateModel(
            name="Release",
            fields=[
                ("id", _id()),
                ("agent_name", models.CharField(max_length=64)),
                ("number", models.PositiveIntegerField()),
                ("note", models.CharField(blank=True, max_length=500)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("created_by", _user()),
                (
                    "prompt_version",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="releases",
                        to="releases.promptversion",
                    ),
                ),
                (
                    "config_version",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="releases",
                        to="releases.agentconfigversion",
                    ),
                ),
            ],
            options={
                "ordering": ["agent_name", "-number"],
                "permissions": [
                    ("promote_production_release", "Can move an agent's production release label")
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("agent_name", "number"), name="release_unique_number"
                    ),
                    models.UniqueConstraint(
                        fields=("agent_name", "prompt_version", "config_version"),
                        name="release_unique_pair",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("number__gte", 1)), name="release_number_positive"
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="ReleaseLabel",
            fields=[
                ("id", _id()),
                ("agent_name", models.CharField(max_length=64)),
                ("label", models.CharField(choices=LABELS, max_length=16)),
                ("moved_at", models.DateTimeField()),
                ("moved_by", _user()),
                (
                    "release",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="releases.release",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("agent_name", "label"), name="release_label_unique"
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="ReleaseLabelMove",
            fields=[
                ("id", _id()),
                ("agent_name", models.CharField(max_length=64)),
                ("label", models.CharField(choices=LABELS, max_length=16)),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("initial", "Initial"),
                            ("move", "Move"),
                            ("promotion", "Promotion"),
                            ("rollback", "Rollback"),
                            ("activation", "Activation"),
                        ],
                        max_length=16,
                    ),
                ),
                ("gate", models.CharField(blank=True, max_length=300)),
                ("moved_at", models.DateTimeField()),
                ("moved_by", _user()),
                (
                    "from_release",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="releases.release",
                    ),
                ),
                (
                    "to_release",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="releases.release",
                    ),
                ),
            ],
            options={
                "ordering": ["-moved_at", "-id"],
                "indexes": [
                    models.Index(
                        fields=["agent_name", "label"], name="release_move_agent_label"
                    )
                ],
            },
        ),
    ]
