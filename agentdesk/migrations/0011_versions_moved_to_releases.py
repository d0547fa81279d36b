"""The versions moved to the releases app (state only); the old label pointers go.

``AgentConfigActive``, ``PromptLabel`` and ``PromptLabelMove`` were turned into releases,
labels and moves by releases/0002, so their tables are dropped. Reversing recreates
them empty (the releases hold the history; nothing maps back onto the old pointers).
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("agentdesk", "0010_auditevent_moved_to_audit"),
        ("releases", "0002_releases_from_labels"),
        ("runs", "0013_run_release"),
    ]

    operations = [
        migrations.DeleteModel(name="AgentConfigActive"),
        migrations.DeleteModel(name="PromptLabel"),
        migrations.DeleteModel(name="PromptLabelMove"),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="AgentConfigVersion"),
                migrations.DeleteModel(name="PromptVersion"),
            ],
            database_operations=[],
        ),
    ]
