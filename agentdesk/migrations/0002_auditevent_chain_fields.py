"""The hash chain's fields, nullable until 0003 has chained the events already there."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("agentdesk", "0001_initial")]

    operations = [
        migrations.AlterModelOptions(name="auditevent", options={"ordering": ["-seq"]}),
        migrations.RemoveIndex(model_name="auditevent", name="agentdesk_a_object__7601df_idx"),
        migrations.AlterField(
            model_name="auditevent",
            name="trace_id",
            field=models.CharField(blank=True, max_length=32),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="created_at",
            field=models.DateTimeField(db_index=True),
        ),
        migrations.AddField(
            model_name="auditevent", name="seq", field=models.BigIntegerField(null=True)
        ),
        migrations.AddField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(default="", max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="auditevent",
            name="hash",
            field=models.CharField(default="", max_length=64),
            preserve_default=False,
        ),
    ]
