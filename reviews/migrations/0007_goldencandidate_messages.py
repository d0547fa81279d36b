from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("reviews", "0006_action_review_outcome_backfill"),
    ]

    operations = [
        migrations.AddField(
            model_name="goldencandidate",
            name="messages",
            field=models.JSONField(blank=True, default=list, null=True),
        ),
    ]
