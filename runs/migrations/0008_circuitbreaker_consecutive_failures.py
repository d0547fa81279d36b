from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("runs", "0007_lease_held_function")]

    operations = [
        migrations.AddField(
            model_name="circuitbreaker",
            name="consecutive_failures",
            field=models.PositiveIntegerField(default=0),
        ),
    ]
