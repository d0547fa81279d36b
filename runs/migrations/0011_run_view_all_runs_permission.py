"""``runs.view_all_runs``: every run, whatever its queues; held by operators and auditors.

Until now ``runs.view_run`` showed every run to everyone who held it, reviewers included.
It now only opens the runs pages, scoped by queue; the new permission is the role grant.
Existing operator, auditor and release-manager groups (agentdesk.roles) receive it here,
so an upgrade does not take every run away from them before ``roles_sync`` runs again.
"""

from typing import Any

from django.db import migrations

ROLE_GROUPS = ("operator", "auditor", "release_manager")


def _grant(apps: Any, schema_editor: Any) -> None:
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after migrate (post_migrate); this one is needed now.
    # create_permissions skips an app without a models module, which a migration's
    # historical app config lacks; set it for the call and put back what was there.
    app_config = apps.get_app_config("runs")
    models_module = getattr(app_config, "models_module", None)
    app_config.models_module = models_module or True
    try:
        create_permissions(app_config, apps=apps, verbosity=0)
    finally:
        app_config.models_module = models_module
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    permission = Permission.objects.get(content_type__app_label="runs", codename="view_all_runs")
    for group in Group.objects.filter(name__in=ROLE_GROUPS):
        group.permissions.add(permission)


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0010_action_not_evaluated_run_degraded"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="run",
            options={
                "ordering": ["-created_at"],
                "permissions": [("view_all_runs", "Can view every run, whatever its queues")],
            },
        ),
        migrations.RunPython(_grant, migrations.RunPython.noop),
    ]
