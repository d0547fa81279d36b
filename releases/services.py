"""Releases and their labels: the one mechanism that decides what an agent runs.

A release pins a prompt version and a configuration version of one agent (both immutable,
``releases.prompts`` and ``releases.configuration``). Three labels point at releases:
``dev``, ``staging`` and ``production``; new runs use production's release and record it.

1. ``release_for`` returns the release of a (prompt version, configuration version) pair,
   numbering a new one the first time the pair is asked for.
2. ``release_label_move`` moves one label. ``dev`` may point at any release. ``staging``
   moves to the release ``dev`` points at and ``production`` to ``staging``'s: a
   *promotion*, which must pass ``releases.gate.promotion_gate``. Either may also move
   back to a release it pointed at before: a *rollback*, which restores the prompt and
   the configuration together. Moving ``production`` needs
   ``releases.promote_production_release``; the other labels ``releases.change_release``.
3. Two shortcuts name the change people make most, and go through the same move:
   ``release_activate_config`` points production at its own prompt with another
   configuration version (an *activation*, through the gate; or a rollback, when that
   release served before), as activating a configuration did before releases; and
   ``release_try_prompt`` points dev at a prompt version with dev's configuration.

Labels are moved under their row lock, so concurrent moves take turns and each audit
event (``release.label_moved``, object ``release:<agent>``) records the release it
really replaced. A move confirmed against a release that is no longer the label's
(``expected_current``) is refused with LabelChanged, and nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.log import audit_record
from audit.models import AuditVerb
from releases.config_documents import ConfigRefused
from releases.configuration import (
    ConfigDiff,
    config_diff,
    config_queues_exist,
    config_version_first,
)
from releases.gate import promotion_gate
from releases.models import (
    AgentConfigVersion,
    LabelName,
    MoveKind,
    PromptVersion,
    Release,
    ReleaseLabel,
    ReleaseLabelMove,
)
from releases.prompts import PromptDiff, prompt_diff, prompt_version_first

if TYPE_CHECKING:
    from django.contrib.auth.models import User

AUDIT_OBJECT = "release"
VIEW_RELEASES = "releases.view_release"
CHANGE_RELEASES = "releases.change_release"
PROMOTE_PRODUCTION = "releases.promote_production_release"
OVERRIDE_GATE = "releases.override_promotion_gate"
ACTIVATE_CONFIG = "releases.change_agentconfigversion"
LABELS = tuple(LabelName)
# The label a promotion takes its release from.
PROMOTED_FROM = {LabelName.STAGING: LabelName.DEV, LabelName.PRODUCTION: LabelName.STAGING}


class ReleaseRefused(ValueError):
    """A release change that cannot be made; the message says why, for a person."""


class LabelChanged(ReleaseRefused):
    """The label moved since the person confirmed; nothing changed."""


def _described(release: Release | None) -> dict[str, object]:
    if release is None:
        return {"number": None}
    return {
        "number": release.number,
        "prompt": release.prompt_version.ref,
        "config": release.config_version.number,
        "policy_version": release.config_version.policy_version,
    }


# --- releases ----------------------------------------------------------------------------------


def _release_query(agent_name: str):  # type: ignore[no-untyped-def]
    return Release.objects.filter(agent_name=agent_name).select_related(
        "prompt_version", "config_version", "created_by"
    )


def release_for(
    *,
    prompt_version: PromptVersion,
    config_version: AgentConfigVersion,
    user: User | None,
    note: str = "",
) -> Release:
    """The release of this pair, numbered the first time it is asked for.

    Race-safe: numbers are handed out under the lock of the agent's prompt version 1 row
    (the same lock the prompt numbering takes, taken before any release exists), and the
    unique pair makes a second process that raced this one read the first one's release.
    """
    agent_name = prompt_version.agent_name
    if config_version.agent_name != agent_name:
        raise ReleaseRefused("A release pairs versions of one agent.")
    existing = _release_query(agent_name).filter(
        prompt_version=prompt_version, config_version=config_version
    )
    found = existing.first()
    if found is not None:
        return found
    with transaction.atomic():
        first = prompt_version_first(agent_name=agent_name)
        PromptVersion.objects.select_for_update().filter(pk=first.pk).get()
        found = existing.first()
        if found is not None:
            return found
        last = Release.objects.filter(agent_name=agent_name).order_by("-number").first()
        release = Release.objects.create(
            agent_name=agent_name,
            number=(last.number if last else 0) + 1,
            prompt_version=prompt_version,
            config_version=config_version,
            note=note.strip()[:500],
            created_by=user,
        )
        audit_record(
            actor=user,
            verb=AuditVerb.RELEASE_CREATED,
            object_type=AUDIT_OBJECT,
            object_id=agent_name,
            after={**_described(release), "note": release.note},
        )
    return release


def release_get(*, agent_name: str, number: int) -> Release | None:
    return _release_query(agent_name).filter(number=number).first()


def releases_of(*, agent_name: str, limit: int = 200) -> list[Release]:
    """An agent's releases, newest first, with their versions and who made them."""
    return list(_release_query(agent_name).order_by("-number")[:limit])


# --- labels ------------------------------------------------------------------------------------


def _labels_read(agent_name: str) -> dict[str, Release]:
    return {
        row.label: row.release
        for row in ReleaseLabel.objects.select_related(
            "release__prompt_version", "release__config_version"
        ).filter(agent_name=agent_name)
    }


def release_labels(*, agent_name: str) -> dict[str, Release]:
    """Where each label points; the first time, release 1 (both versions 1) under all three.

    The bootstrap is race-safe: the unique (agent, number) of each kind of row and the
    unique (agent, label) make a second process that raced this one read the first one's.
    """
    labels = _labels_read(agent_name)
    if len(labels) == len(LABELS):
        return labels
    release = release_for(
        prompt_version=prompt_version_first(agent_name=agent_name),
        config_version=config_version_first(agent_name=agent_name),
        user=None,
        note="The agent's code at first use.",
    )
    now = timezone.now()
    with transaction.atomic():
        try:
            with transaction.atomic():  # a savepoint: the race's loser reads the winner's
                moves = []
                for label in LABELS:
                    _, made = ReleaseLabel.objects.get_or_create(
                        agent_name=agent_name,
                        label=label,
                        defaults={"release": release, "moved_at": now},
                    )
                    if made:
                        moves.append(
                            ReleaseLabelMove.objects.create(
                                agent_name=agent_name,
                                label=label,
                                to_release=release,
                                kind=MoveKind.INITIAL,
                                moved_at=now,
                            )
                        )
        except IntegrityError:
            return _labels_read(agent_name)
        for move in moves:
            _audit_moved(move, None)
    return _labels_read(agent_name)


def release_production(*, agent_name: str) -> Release:
    """The release new runs use, with its two versions. One query once bootstrapped."""
    row = (
        ReleaseLabel.objects.select_related("release__prompt_version", "release__config_version")
        .filter(agent_name=agent_name, label=LabelName.PRODUCTION)
        .first()
    )
    if row is not None:
        return row.release
    return release_labels(agent_name=agent_name)[LabelName.PRODUCTION]


def config_active(*, agent_name: str) -> AgentConfigVersion:
    """The configuration version new runs use: the production release's."""
    return release_production(agent_name=agent_name).config_version


def release_label_rows(*, agent_name: str) -> list[ReleaseLabel]:
    """The three labels in pipeline order, with their releases and who moved them last."""
    release_labels(agent_name=agent_name)
    rows = {
        row.label: row
        for row in ReleaseLabel.objects.select_related(
            "release__prompt_version", "release__config_version", "moved_by"
        ).filter(agent_name=agent_name)
    }
    return [rows[label] for label in LABELS]


def release_label_history(*, agent_name: str, limit: int = 50) -> list[ReleaseLabelMove]:
    """The latest label moves, newest first."""
    return list(
        ReleaseLabelMove.objects.filter(agent_name=agent_name)
        .select_related(
            "from_release__prompt_version",
            "from_release__config_version",
            "to_release__prompt_version",
            "to_release__config_version",
            "moved_by",
        )
        .order_by("-moved_at", "-id")[:limit]
    )


def release_label_previous(*, agent_name: str, label: str) -> list[Release]:
    """The releases ``label`` pointed at before and may roll back to, newest first."""
    current = ReleaseLabel.objects.filter(agent_name=agent_name, label=label).first()
    ids = set(
        ReleaseLabelMove.objects.filter(agent_name=agent_name, label=label).values_list(
            "to_release_id", flat=True
        )
    )
    if current is not None:
        ids.discard(current.release_id)
    return list(_release_query(agent_name).filter(pk__in=ids).order_by("-number"))


def release_move_permission(*, label: str) -> str:
    """The permission that moving ``label`` needs."""
    return PROMOTE_PRODUCTION if label == LabelName.PRODUCTION else CHANGE_RELEASES


def _require(user: User, needed: str, what: str) -> None:
    if not user.has_perm(needed):
        raise PermissionDenied(f"{what} needs the {needed} permission")


def _audit_moved(move: ReleaseLabelMove, user: User | None) -> None:
    audit_record(
        actor=user,
        verb=AuditVerb.RELEASE_LABEL_MOVED,
        object_type=AUDIT_OBJECT,
        object_id=move.agent_name,
        before={"label": move.label, **_described(move.from_release)},
        after={
            "label": move.label,
            **_described(move.to_release),
            "kind": move.kind,
            "gate": move.gate,
        },
    )


def _locked_label(agent_name: str, label: str, expected_current: int | None) -> ReleaseLabel:
    """The label's row, locked; LabelChanged if it no longer holds ``expected_current``."""
    if label not in LabelName.values:
        raise ReleaseRefused(f"There is no label {label!r}; the labels are {', '.join(LABELS)}.")
    release_labels(agent_name=agent_name)
    # No join in the locking query: when the row was moved while this one waited,
    # PostgreSQL re-checks the join against the old release row and returns nothing.
    row = ReleaseLabel.objects.select_for_update().get(agent_name=agent_name, label=label)
    row.release = _release_query(agent_name).get(pk=row.release_id)
    if expected_current is not None and row.release.number != expected_current:
        raise LabelChanged(
            f"{label} moved to release {row.release.number} after you looked (you confirmed "
            f"against release {expected_current}). Check the change against it and confirm "
            "again."
        )
    return row


def _gate(
    release: Release, label: str, kind: MoveKind, user: User | None, override_reason: str
) -> str:
    """The gate's reason for a pass; ReleaseRefused with its reason for a refusal.

    ``override_reason``: a holder of OVERRIDE_GATE moves the release anyway when the gate
    refuses; the reason is mandatory and the override is its own audit event.
    """
    result = promotion_gate(release=release, label=label, kind=kind)
    if result.passed:
        return result.reason
    reason = override_reason.strip()
    if not reason:
        raise ReleaseRefused(
            f"Release {release.number} may not be moved to {label}: {result.reason}"
        )
    if user is None:
        raise ReleaseRefused("Only a person may override the promotion gate.")
    _require(user, OVERRIDE_GATE, "overriding the promotion gate")
    audit_record(
        actor=user,
        verb=AuditVerb.PROMOTION_GATE_OVERRIDDEN,
        object_type=AUDIT_OBJECT,
        object_id=release.agent_name,
        after={
            "release": release.number,
            "label": label,
            "kind": kind,
            "gate": result.reason,
            "reason": reason[:1000],
        },
    )
    return f"overridden by {user.get_username()}: {reason[:300]} (the gate said: {result.reason})"


def _move(
    row: ReleaseLabel, target: Release, kind: MoveKind, gate: str, user: User | None
) -> ReleaseLabelMove:
    now = timezone.now()
    move = ReleaseLabelMove.objects.create(
        agent_name=row.agent_name,
        label=row.label,
        from_release=row.release,
        to_release=target,
        kind=kind,
        gate=gate,
        moved_by=user,
        moved_at=now,
    )
    row.release = target
    row.moved_by = user
    row.moved_at = now
    row.save(update_fields=["release", "moved_by", "moved_at"])
    _audit_moved(move, user)
    return move


@transaction.atomic
def release_label_move(
    *,
    agent_name: str,
    label: str,
    number: int,
    user: User,
    expected_current: int | None = None,
    override_reason: str = "",
) -> ReleaseLabelMove:
    """Point ``label`` at release ``number``: a move (dev), a promotion or a rollback.

    1. The label must exist and the user must hold its permission (PermissionDenied).
    2. The label's row is locked, so concurrent moves take turns: the second one sees the
       first one's result (and is refused if it asked for the same thing).
    3. ``staging`` and ``production`` move only to the release the label below them
       points at (a promotion, through the gate) or back to a release they pointed at
       before (a rollback, no gate: it restores a known state fast).
    4. Every queue the target's configuration names must still exist.
    """
    if label in LabelName.values:
        _require(user, release_move_permission(label=label), f"moving the {label} label")
    row = _locked_label(agent_name, label, expected_current)
    target = release_get(agent_name=agent_name, number=number)
    if target is None:
        raise ReleaseRefused(f"{agent_name} has no release {number}.")
    if row.release.pk == target.pk:
        raise ReleaseRefused(f"{label} already points at release {number}.")
    gate = ""
    if label == LabelName.DEV:
        kind = MoveKind.MOVE
    else:
        source = PROMOTED_FROM[LabelName(label)]
        source_release = ReleaseLabel.objects.get(agent_name=agent_name, label=source).release
        previous = release_label_previous(agent_name=agent_name, label=label)
        if target.pk == source_release.pk:
            kind = MoveKind.PROMOTION
            gate = _gate(target, label, kind, user, override_reason)
        elif target in previous:
            kind = MoveKind.ROLLBACK
        else:
            back = ", ".join(f"release {r.number}" for r in previous) or "none"
            raise ReleaseRefused(
                f"{label} can move only to the release {source} points at (release "
                f"{source_release.number}), or back to a release it pointed at before "
                f"({back}); not to release {number}."
            )
    _queues_exist(target)
    return _move(row, target, kind, gate, user)


def _queues_exist(release: Release) -> None:
    try:
        config_queues_exist(version=release.config_version)
    except ConfigRefused as refused:
        raise ReleaseRefused(str(refused)) from None


@transaction.atomic
def release_activate_config(
    *,
    agent_name: str,
    number: int,
    user: User | None,
    expected_active: int | None = None,
    expected_release: int | None = None,
    override_reason: str = "",
) -> ReleaseLabelMove:
    """Run configuration version ``number`` in production, with production's prompt.

    Production moves to the release (its prompt version, configuration ``number``): an
    activation through the gate, or a rollback if that release served before. A person
    needs the permission to change configurations (``ACTIVATE_CONFIG``, operators), as
    activating one always has; ``user`` None is the system. ``expected_active``: the
    configuration number the operator saw in production when they confirmed the diff; if
    another has gone live since, LabelChanged; ``expected_release``, the production release
    they saw: a prompt promoted meanwhile would otherwise be paired with this configuration
    unseen.
    """
    if user is not None:
        _require(user, ACTIVATE_CONFIG, "activating a configuration")
    row = _locked_label(agent_name, LabelName.PRODUCTION, expected_release)
    current = row.release
    if expected_active is not None and current.config_version.number != expected_active:
        raise LabelChanged(
            f"Version {current.config_version.number} was activated after you looked (you "
            f"confirmed against version {expected_active}). Check the diff against it and "
            "confirm again."
        )
    config = AgentConfigVersion.objects.filter(agent_name=agent_name, number=number).first()
    if config is None:
        raise ReleaseRefused(f"{agent_name} has no version {number}.")
    if config.pk == current.config_version_id:
        raise ReleaseRefused(f"Version {number} is already active.")
    target = release_for(prompt_version=current.prompt_version, config_version=config, user=user)
    _queues_exist(target)
    previous = release_label_previous(agent_name=agent_name, label=LabelName.PRODUCTION)
    if target in previous:
        return _move(row, target, MoveKind.ROLLBACK, "", user)
    gate = _gate(target, LabelName.PRODUCTION, MoveKind.ACTIVATION, user, override_reason)
    return _move(row, target, MoveKind.ACTIVATION, gate, user)


@transaction.atomic
def release_try_prompt(
    *, agent_name: str, prompt_number: int, user: User, expected_current: int | None = None
) -> ReleaseLabelMove:
    """Point dev at prompt version ``prompt_number`` with dev's configuration."""
    _require(user, CHANGE_RELEASES, "moving the dev label")
    row = _locked_label(agent_name, LabelName.DEV, expected_current)
    prompt = PromptVersion.objects.filter(agent_name=agent_name, number=prompt_number).first()
    if prompt is None:
        raise ReleaseRefused(f"{agent_name} has no prompt version {prompt_number}.")
    if prompt.pk == row.release.prompt_version_id:
        raise ReleaseRefused(f"dev already uses prompt version {prompt_number}.")
    target = release_for(
        prompt_version=prompt, config_version=row.release.config_version, user=user
    )
    return _move(row, target, MoveKind.MOVE, "", user)


@transaction.atomic
def release_make(
    *, agent_name: str, prompt_number: int, config_number: int, user: User, note: str = ""
) -> Release:
    """The release of prompt ``prompt_number`` with configuration ``config_number``."""
    _require(user, CHANGE_RELEASES, "making a release")
    prompt = PromptVersion.objects.filter(agent_name=agent_name, number=prompt_number).first()
    config = AgentConfigVersion.objects.filter(agent_name=agent_name, number=config_number).first()
    if prompt is None or config is None:
        missing = "prompt" if prompt is None else "configuration"
        number = prompt_number if prompt is None else config_number
        raise ReleaseRefused(f"{agent_name} has no {missing} version {number}.")
    return release_for(prompt_version=prompt, config_version=config, user=user, note=note)


# --- diff --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseDiff:
    """What changes from release ``a`` to release ``b``: its prompt and its configuration."""

    prompt: PromptDiff
    config: ConfigDiff

    @property
    def changed(self) -> bool:
        return self.prompt.changed or self.config.changed


def release_diff(*, a: Release, b: Release) -> ReleaseDiff:
    """The change from release ``a`` to release ``b`` of the same agent, both halves."""
    return ReleaseDiff(
        prompt=prompt_diff(a=a.prompt_version, b=b.prompt_version),
        config=config_diff(a=a.config_version, b=b.config_version),
    )
