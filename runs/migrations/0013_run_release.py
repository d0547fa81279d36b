"""A run records its release; its configuration version's model moved to the releases app.

The foreign key to the configuration version changes in state only (the table it points
at keeps its name). The release column is new and nullable: releases/0002 fills it for
the runs that came before.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0012_action_review_outcome"),
        ("releases", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="run",
                    name="config_version",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="runs",
                        to="releases.agentconfigversion",
                    ),
                ),
            ],
            database_operations=[],
        ),
        migrations.AddField(
            model_name="run",
            name="release",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="runs",
                to="releases.release",
            ),
        ),
    ]
