"""Existing prompt labels and active configurations become releases; runs get theirs.

Per agent with both an active configuration (``AgentConfigActive``) and prompt labels:

- every prompt version a label has pointed at becomes a release pairing it with the
  active configuration (the old schema kept no history of activations, so the active
  one is the only configuration a replayed move can be paired with);
- the label moves are replayed onto those releases, kinds and gates kept, so a rollback
  can still return wherever a prompt label had been; the three labels end where the
  prompt labels were;
- each existing run gets the release of its (configuration version, prompt version),
  made if no label ever pointed at it: one UPDATE per distinct pair.

An agent with only one half (its prompt page visited but no run or configuration page
yet, or the reverse) gets the other half from its code, as its first use would have made
it; an agent no longer in the code keeps its versions and gets no release.

Permissions follow the labels: ``promote_production_prompt`` becomes
``releases.promote_production_release`` (same row, so every grant stays), and whoever may
view or change prompt versions may view or change releases.
"""

import hashlib

from django.db import migrations

LABELS = ("dev", "staging", "production")


def _prompt_first(apps, agent_name):
    from agents.registry import UnknownAgent, agent_get

    PromptVersion = apps.get_model("releases", "PromptVersion")
    try:
        agent = agent_get(agent_name)
    except UnknownAgent:
        return None
    template = agent.system_prompt.replace("\r\n", "\n").replace("\r", "\n").rstrip() + "\n"
    version, _ = PromptVersion.objects.get_or_create(
        agent_name=agent_name,
        number=1,
        defaults={
            "template": template,
            "note": "Declared in code (the agent's system prompt at first use).",
            "content_hash": hashlib.sha256(template.encode()).hexdigest(),
        },
    )
    return version.pk


def _config_first(apps, agent_name):
    from agents.registry import UnknownAgent, agent_get
    from releases.configuration import config_code_document

    AgentConfigVersion = apps.get_model("releases", "AgentConfigVersion")
    try:
        agent = agent_get(agent_name)
    except UnknownAgent:
        return None
    version, _ = AgentConfigVersion.objects.get_or_create(
        agent_name=agent_name,
        number=1,
        defaults={
            "config": config_code_document(agent),
            "note": "Declared in code (the agent's configuration at first use).",
            "policy_version": agent.policy.version,
        },
    )
    return version.pk


class _Releases:
    """Numbered releases of one agent, made on first need."""

    def __init__(self, apps, agent_name):
        self.model = apps.get_model("releases", "Release")
        self.agent_name = agent_name
        self.by_pair = {
            (r.prompt_version_id, r.config_version_id): r
            for r in self.model.objects.filter(agent_name=agent_name)
        }

    def get(self, prompt_id, config_id):
        release = self.by_pair.get((prompt_id, config_id))
        if release is None:
            release = self.model.objects.create(
                agent_name=self.agent_name,
                number=len(self.by_pair) + 1,
                prompt_version_id=prompt_id,
                config_version_id=config_id,
                note="Made from the prompt labels and configuration of before releases.",
            )
            self.by_pair[(prompt_id, config_id)] = release
        return release


def _labels(apps, agent_name, config_id):
    PromptLabel = apps.get_model("agentdesk", "PromptLabel")
    PromptLabelMove = apps.get_model("agentdesk", "PromptLabelMove")
    ReleaseLabel = apps.get_model("releases", "ReleaseLabel")
    ReleaseLabelMove = apps.get_model("releases", "ReleaseLabelMove")
    releases = _Releases(apps, agent_name)
    labels = {row.label: row for row in PromptLabel.objects.filter(agent_name=agent_name)}
    if len(labels) < len(LABELS):  # the prompt half never bootstrapped
        prompt_id = _prompt_first(apps, agent_name)
        if prompt_id is None:
            return releases
        for label in LABELS:
            release = releases.get(prompt_id, config_id)
            ReleaseLabel.objects.create(
                agent_name=agent_name, label=label, release=release, moved_at=_now()
            )
            ReleaseLabelMove.objects.create(
                agent_name=agent_name,
                label=label,
                to_release=release,
                kind="initial",
                moved_at=_now(),
            )
        return releases
    for move in PromptLabelMove.objects.filter(agent_name=agent_name).order_by("moved_at", "id"):
        ReleaseLabelMove.objects.create(
            agent_name=agent_name,
            label=move.label,
            from_release=(
                releases.get(move.from_version_id, config_id) if move.from_version_id else None
            ),
            to_release=releases.get(move.to_version_id, config_id),
            kind=move.kind,
            gate=move.gate,
            moved_by_id=move.moved_by_id,
            moved_at=move.moved_at,
        )
    for label, row in labels.items():
        ReleaseLabel.objects.create(
            agent_name=agent_name,
            label=label,
            release=releases.get(row.version_id, config_id),
            moved_by_id=row.moved_by_id,
            moved_at=row.moved_at,
        )
    return releases


def _now():
    from django.utils import timezone

    return timezone.now()


def _runs(apps, agent_name, releases):
    Run = apps.get_model("runs", "Run")
    PromptVersion = apps.get_model("releases", "PromptVersion")
    prompts = {v.number: v for v in PromptVersion.objects.filter(agent_name=agent_name)}
    pairs = (
        Run.objects.filter(agent_name=agent_name, config_version__isnull=False)
        .values_list("config_version_id", "prompt_version")
        .order_by()  # without Run's ordering, whose column would join the DISTINCT
        .distinct()
    )
    for config_id, ref in list(pairs):
        # A run records "v<number>-<10 hex of the hash>"; older formats name no version.
        head, _, digest = ref.partition("-")
        number = int(head[1:]) if head[:1] == "v" and head[1:].isdigit() else None
        version = prompts.get(number)
        if version is None or not version.content_hash.startswith(digest) or not digest:
            continue
        release = releases.get(version.pk, config_id)
        Run.objects.filter(
            agent_name=agent_name, config_version_id=config_id, prompt_version=ref
        ).update(release=release)


def _grant_as(held, target):
    """Grant ``target`` to every group and user holding ``held``."""
    for group in held.group_set.all():
        group.permissions.add(target)
    for user in held.user_set.all():
        user.user_permissions.add(target)


def _permissions(apps):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    release_type, _ = ContentType.objects.get_or_create(app_label="releases", model="release")
    promote = Permission.objects.filter(
        content_type__app_label="agentdesk", codename="promote_production_prompt"
    ).first()
    if promote is not None:
        existing = Permission.objects.filter(
            content_type=release_type, codename="promote_production_release"
        ).first()
        if existing is None:  # the same row, so every grant stays
            promote.content_type = release_type
            promote.codename = "promote_production_release"
            promote.name = "Can move an agent's production release label"
            promote.save()
        else:  # made already (a staged migrate, a re-run): copy the grants onto it
            _grant_as(promote, existing)
    for action, source in (("view", "view_promptversion"), ("change", "change_promptversion")):
        target, _ = Permission.objects.get_or_create(
            content_type=release_type,
            codename=f"{action}_release",
            defaults={"name": f"Can {action} release"},
        )
        held = Permission.objects.filter(
            content_type__app_label="releases", codename=source
        ).first()
        if held is None:
            continue
        _grant_as(held, target)


def forward(apps, schema_editor):
    AgentConfigActive = apps.get_model("agentdesk", "AgentConfigActive")
    PromptLabel = apps.get_model("agentdesk", "PromptLabel")
    active = {row.agent_name: row.version_id for row in AgentConfigActive.objects.all()}
    for agent_name in PromptLabel.objects.values_list("agent_name", flat=True).distinct():
        if agent_name not in active:
            config_id = _config_first(apps, agent_name)
            if config_id is not None:
                active[agent_name] = config_id
    for agent_name, config_id in sorted(active.items()):
        releases = _labels(apps, agent_name, config_id)
        _runs(apps, agent_name, releases)
    _permissions(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("releases", "0001_initial"),
        ("runs", "0013_run_release"),
        ("agentdesk", "0010_auditevent_moved_to_audit"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    # Backwards: the release rows are dropped with their tables by reversing 0001; the
    # old labels are still there until agentdesk/0011 (which cannot be reversed).
    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
