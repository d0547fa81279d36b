from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("agentdesk", "0003_auditevent_chain_existing")]

    operations = [
        migrations.AlterField(
            model_name="auditevent", name="seq", field=models.BigIntegerField(unique=True)
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["object_type", "object_id", "seq"], name="audit_object_seq"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["actor_label", "seq"], name="audit_actor_seq"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["trace_id", "seq"], name="audit_trace_seq"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(
                fields=["verb", "seq"],
                name="audit_verb_seq",
                opclasses=["varchar_pattern_ops", "int8_ops"],
            ),
        ),
    ]
