"""releases/0002: prompt labels and the active configuration of before become releases.

Each test migrates back to before releases (agentdesk/0010, runs/0012, no releases
migration), writes rows with the historic models as an upgraded database holds them,
migrates to every app's leaf and checks what the data migration made of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.apps.registry import Apps
from django.contrib.auth.models import Group
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext

from examples.support.agent import SYSTEM_PROMPT
from releases.models import Release, ReleaseLabel, ReleaseLabelMove
from runs.models import Run
from tests.conftest import migrated_forward_again

pytestmark = pytest.mark.django_db(transaction=True)

AGENT = "support"
BEFORE = [
    ("agentdesk", "0010_auditevent_moved_to_audit"),
    ("runs", "0012_action_review_outcome"),
    ("releases", None),
]
V2_TEXT = SYSTEM_PROMPT + "Sign off with the customer's first name when you know it.\n"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _migrated(write: Callable[[Apps], None], queries: list[str] | None = None) -> None:
    """Migrate back to before releases, ``write`` with the historic models, migrate on
    (the statements of migrating on go to ``queries``)."""
    executor = MigrationExecutor(connection)
    # Every app's leaf: migrating agentdesk and runs back also unapplies the releases
    # migrations that depend on them, and they must all come back.
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(BEFORE)
    try:
        write(MigrationExecutor(connection).loader.project_state(BEFORE[:2]).apps)
    finally:
        with CaptureQueriesContext(connection) as captured:
            MigrationExecutor(connection).migrate(latest)
        if queries is not None:
            queries.extend(query["sql"] for query in captured.captured_queries)
        migrated_forward_again()


def _old_rows(old: Apps, *, fresh_permissions: bool) -> None:
    """Config v1, v2 (v2 active); prompt v1, v2 (dev, staging at v2; production at v1);
    their label history; a run of (config v1, prompt v1); a group holding the old grants.

    ``fresh_permissions``: drop the releases content type the test database kept from
    its setup, as a database that never had releases does not hold it.
    """
    User = old.get_model("auth", "User")
    ContentType = old.get_model("contenttypes", "ContentType")
    Permission = old.get_model("auth", "Permission")
    OldGroup = old.get_model("auth", "Group")
    ConfigVersion = old.get_model("agentdesk", "AgentConfigVersion")
    ConfigActive = old.get_model("agentdesk", "AgentConfigActive")
    PromptVersion = old.get_model("agentdesk", "PromptVersion")
    PromptLabel = old.get_model("agentdesk", "PromptLabel")
    PromptLabelMove = old.get_model("agentdesk", "PromptLabelMove")
    OldRun = old.get_model("runs", "Run")

    if fresh_permissions:
        ContentType.objects.filter(app_label="releases").delete()
    otto = User.objects.create(username="otto")
    c1 = ConfigVersion.objects.create(
        agent_name=AGENT, number=1, config={"v": 1}, note="code", policy_version="p1"
    )
    c2 = ConfigVersion.objects.create(
        agent_name=AGENT, number=2, config={"v": 2}, note="lower", policy_version="p2"
    )
    ConfigActive.objects.create(agent_name=AGENT, version=c2)
    p1 = PromptVersion.objects.create(
        agent_name=AGENT, number=1, template=SYSTEM_PROMPT, content_hash=_sha(SYSTEM_PROMPT)
    )
    p2 = PromptVersion.objects.create(
        agent_name=AGENT, number=2, template=V2_TEXT, content_hash=_sha(V2_TEXT)
    )
    for label, version in (("dev", p2), ("staging", p2), ("production", p1)):
        PromptLabel.objects.create(agent_name=AGENT, label=label, version=version, moved_at=T0)
    history = [
        ("dev", None, p1, "initial", "", None),
        ("staging", None, p1, "initial", "", None),
        ("production", None, p1, "initial", "", None),
        ("dev", p1, p2, "move", "", otto),
        ("staging", p1, p2, "promotion", "passed: no eval gate configured yet", otto),
    ]
    for i, (label, a, b, kind, gate, who) in enumerate(history):
        PromptLabelMove.objects.create(
            agent_name=AGENT,
            label=label,
            from_version=a,
            to_version=b,
            kind=kind,
            gate=gate,
            moved_by=who,
            moved_at=T0 + timedelta(minutes=i),
        )
    OldRun.objects.create(
        agent_name=AGENT,
        input={},
        trace_id="0" * 32,
        prompt_version=f"v1-{_sha(SYSTEM_PROMPT)[:10]}",
        model="gpt-4o",
        request_hash="h",
        config_version=c1,
    )
    label_type, _ = ContentType.objects.get_or_create(app_label="agentdesk", model="promptlabel")
    promote, _ = Permission.objects.get_or_create(
        content_type=label_type,
        codename="promote_production_prompt",
        defaults={"name": "Can move an agent's production prompt label"},
    )
    change = Permission.objects.get(
        content_type__app_label="agentdesk", codename="change_promptversion"
    )
    group = OldGroup.objects.create(name="shippers")
    group.permissions.add(promote, change)


def _pairs() -> list[tuple[int, int, int]]:
    return list(
        Release.objects.filter(agent_name=AGENT)
        .order_by("number")
        .values_list("number", "prompt_version__number", "config_version__number")
    )


def _granted() -> set[str]:
    group = Group.objects.get(name="shippers")
    return {
        f"{app}.{codename}"
        for app, codename in group.permissions.values_list("content_type__app_label", "codename")
    }


def test_labels_moves_and_runs_become_releases() -> None:
    _migrated(lambda old: _old_rows(old, fresh_permissions=True))

    # Every prompt a label pointed at, with the active configuration; the run's own pair.
    assert _pairs() == [(1, 1, 2), (2, 2, 2), (3, 1, 1)]
    labels = {
        row.label: (row.release.number, row.release.prompt_version.number)
        for row in ReleaseLabel.objects.select_related("release__prompt_version")
    }
    assert labels == {"dev": (2, 2), "staging": (2, 2), "production": (1, 1)}
    production = ReleaseLabel.objects.get(agent_name=AGENT, label="production").release
    assert (production.prompt_version.number, production.config_version.number) == (1, 2)
    moves = ReleaseLabelMove.objects.filter(agent_name=AGENT).order_by("moved_at", "id")
    assert [
        (
            m.label,
            m.from_release.number if m.from_release else None,
            m.to_release.number,
            m.kind,
            m.gate,
            m.moved_by.username if m.moved_by else None,
            m.moved_at,
        )
        for m in moves
    ] == [
        ("dev", None, 1, "initial", "", None, T0),
        ("staging", None, 1, "initial", "", None, T0 + timedelta(minutes=1)),
        ("production", None, 1, "initial", "", None, T0 + timedelta(minutes=2)),
        ("dev", 1, 2, "move", "", "otto", T0 + timedelta(minutes=3)),
        (
            "staging",
            1,
            2,
            "promotion",
            "passed: no eval gate configured yet",
            "otto",
            T0 + timedelta(minutes=4),
        ),
    ]
    run = Run.objects.select_related("release__prompt_version", "release__config_version").get()
    assert (run.release.prompt_version.number, run.release.config_version.number) == (1, 1)
    assert run.config_version_id == run.release.config_version_id
    # The old grant is the new permission's row; change_promptversion also grants
    # change_release.
    assert _granted() == {
        "releases.promote_production_release",
        "releases.change_promptversion",
        "releases.change_release",
    }


def test_the_production_grant_survives_when_the_new_permission_exists_already() -> None:
    _migrated(lambda old: _old_rows(old, fresh_permissions=False))

    assert _pairs() == [(1, 1, 2), (2, 2, 2), (3, 1, 1)]
    assert {"releases.promote_production_release", "releases.change_release"} <= _granted()


def test_an_agent_with_configuration_but_no_prompt_labels_gets_release_1_of_its_code() -> None:
    def write(old: Apps) -> None:
        ConfigVersion = old.get_model("agentdesk", "AgentConfigVersion")
        ConfigActive = old.get_model("agentdesk", "AgentConfigActive")
        c1 = ConfigVersion.objects.create(
            agent_name=AGENT, number=1, config={"v": 1}, policy_version="p1"
        )
        ConfigActive.objects.create(agent_name=AGENT, version=c1)

    _migrated(write)

    assert _pairs() == [(1, 1, 1)]
    release = Release.objects.get()
    assert (release.prompt_version.template, release.prompt_version.content_hash) == (
        SYSTEM_PROMPT,
        _sha(SYSTEM_PROMPT),
    )
    assert dict(ReleaseLabel.objects.values_list("label", "release__number")) == {
        "dev": 1,
        "staging": 1,
        "production": 1,
    }
    assert list(ReleaseLabelMove.objects.values_list("kind", flat=True)) == ["initial"] * 3


def test_runs_get_their_release_in_one_update_per_pair() -> None:
    def write(old: Apps) -> None:
        _old_rows(old, fresh_permissions=True)
        OldRun = old.get_model("runs", "Run")
        first = OldRun.objects.get()
        for i in (1, 2):
            OldRun.objects.create(
                agent_name=AGENT,
                input={},
                trace_id=str(i) * 32,
                prompt_version=first.prompt_version,
                model="gpt-4o",
                request_hash="h",
                config_version_id=first.config_version_id,
            )

    queries: list[str] = []
    _migrated(write, queries)

    assert list(Run.objects.values_list("release__number", flat=True)) == [3, 3, 3]
    updates = [q for q in queries if q.startswith('UPDATE "runs_run" SET "release_id"')]
    assert len(updates) == 1
