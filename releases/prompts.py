"""Prompt versions: an agent's system prompt as immutable versions with three labels.

The prompt an agent declares in code (``Agent.system_prompt``) is the starting point; from
its first use on, the database holds the prompt as numbered, immutable ``PromptVersion``
rows and three labels (``PromptLabel``): ``dev``, ``staging`` and ``production``. New runs
use the version ``production`` points at, and record it (``PromptVersion.ref``, such as
``v3-1a2b3c4d5e``) on the run and on every step.

1. ``prompt_version_create`` validates a template (not empty; every ``$placeholder`` is
   one the agent's ``prompt_context`` provides; no stray ``$``) and stores it as the next
   number. Nothing is saved when anything is wrong, nor when the same text is stored
   already. No label moves.
2. ``prompt_label_move`` moves one label. ``dev`` may point at any version. ``staging``
   moves to the version ``dev`` points at and ``production`` to the one ``staging``
   points at: a *promotion*, which must pass ``prompt_promotion_gate``. Either may also
   move back to a version it pointed at before: a *rollback*. Nothing else is allowed.
   Moving ``production`` needs the ``agentdesk.promote_production_prompt`` permission;
   the other labels need ``agentdesk.change_promptversion``.
3. A run renders its system prompt once, when it is created, so a run in flight keeps the
   text and the version it started with whatever moves later.

Every change writes its audit event (``prompt.version_created``, ``prompt.label_moved``,
object ``prompt:<agent>``) in the same transaction.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
from dataclasses import dataclass
from string import Template
from typing import TYPE_CHECKING

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from agentdesk.models import (
    PromptLabel,
    PromptLabelMove,
    PromptLabelMoveKind,
    PromptLabelName,
    PromptVersion,
)
from agents.definition import Agent
from agents.registry import agent_get
from audit.log import audit_record

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from pydantic import BaseModel

AUDIT_OBJECT = "prompt"
VIEW_PROMPTS = "agentdesk.view_promptversion"
CHANGE_PROMPTS = "agentdesk.change_promptversion"
PROMOTE_PRODUCTION = "agentdesk.promote_production_prompt"
MAX_TEMPLATE_CHARS = 100_000
LABELS = tuple(PromptLabelName)
# The label a promotion takes its version from.
PROMOTED_FROM = {
    PromptLabelName.STAGING: PromptLabelName.DEV,
    PromptLabelName.PRODUCTION: PromptLabelName.STAGING,
}


class PromptRefused(ValueError):
    """A prompt change that cannot be made; the message says why, for a person."""


# --- text ------------------------------------------------------------------------------------


def prompt_canonical(*, template: str) -> str:
    """The form a template is stored and hashed in: ``\\n`` line ends, one final newline.

    Browsers post textareas with ``\\r\\n``; without this, the same prompt pasted back
    would be a "different" version whose diff shows nothing.
    """
    return template.replace("\r\n", "\n").replace("\r", "\n").rstrip() + "\n"


def prompt_hash(*, template: str) -> str:
    return hashlib.sha256(template.encode()).hexdigest()


def _line_of(template: str, index: int) -> int:
    return template.count("\n", 0, index) + 1


def prompt_validate(*, agent: Agent, template: str) -> str:
    """The canonical form of a proposed template; PromptRefused if it cannot be used."""
    if not template.strip():
        raise PromptRefused("The prompt is empty.")
    canonical = prompt_canonical(template=template)
    if len(canonical) > MAX_TEMPLATE_CHARS:
        raise PromptRefused(
            f"The prompt is {len(canonical)} characters; the limit is {MAX_TEMPLATE_CHARS}."
        )
    parsed = Template(canonical)
    if not parsed.is_valid():
        # A "$" that starts no placeholder ("$5", "${name"): safe_substitute would pass it
        # through, but it is more often a typo than a price.
        match = next(
            m for m in parsed.pattern.finditer(canonical) if m.group("invalid") is not None
        )
        start = match.start("invalid") - 1  # the "$"
        excerpt = canonical[start : start + 8].split("\n")[0]
        raise PromptRefused(
            f"Line {_line_of(canonical, start)}: {excerpt!r} is not a placeholder. "
            "Write $$ for a literal dollar sign."
        )
    allowed = agent.allowed_placeholders
    unknown = [name for name in parsed.get_identifiers() if name not in allowed]
    if unknown:
        known = ", ".join(f"${name}" for name in sorted(allowed)) or "none"
        raise PromptRefused(
            f"The {agent.name} agent does not provide "
            f"{', '.join(f'${name}' for name in unknown)}; its placeholders are: {known}."
        )
    return canonical


def prompt_render(*, agent: Agent, version: PromptVersion, validated_input: BaseModel) -> str:
    """A version's system prompt for one input (the agent's ``prompt_context`` filled in)."""
    return agent.render_system_prompt(validated_input, template=version.template)


# --- the first use ---------------------------------------------------------------------------


def _audit_created(version: PromptVersion, user: User | None) -> None:
    audit_record(
        actor=user,
        verb="prompt.version_created",
        object_type=AUDIT_OBJECT,
        object_id=version.agent_name,
        after={
            "number": version.number,
            "ref": version.ref,
            "note": version.note,
            "content_hash": version.content_hash,
        },
    )


def _audit_moved(move: PromptLabelMove, user: User | None) -> None:
    before = move.from_version
    audit_record(
        actor=user,
        verb="prompt.label_moved",
        object_type=AUDIT_OBJECT,
        object_id=move.agent_name,
        before={
            "label": move.label,
            "number": before.number if before else None,
            "ref": before.ref if before else None,
        },
        after={
            "label": move.label,
            "number": move.to_version.number,
            "ref": move.to_version.ref,
            "kind": move.kind,
            "gate": move.gate,
        },
    )


def _labels_read(agent_name: str) -> dict[str, PromptVersion]:
    return {
        row.label: row.version
        for row in PromptLabel.objects.select_related("version").filter(agent_name=agent_name)
    }


def prompt_labels(*, agent_name: str) -> dict[str, PromptVersion]:
    """Where each label points; the first time, version 1 from the code under all three.

    The bootstrap is race-safe as ``config_active``'s is: the unique (agent, number) and
    (agent, label) make a second process that raced this one read the first one's rows.
    """
    labels = _labels_read(agent_name)
    if len(labels) == len(LABELS):
        return labels
    agent = agent_get(agent_name)
    template = prompt_canonical(template=agent.system_prompt)
    now = timezone.now()
    with transaction.atomic():
        try:
            with transaction.atomic():  # a savepoint: the race's loser reads the winner's
                version, created = PromptVersion.objects.get_or_create(
                    agent_name=agent_name,
                    number=1,
                    defaults={
                        "template": template,
                        "note": "Declared in code (the agent's system prompt at first use).",
                        "content_hash": prompt_hash(template=template),
                    },
                )
                moves = []
                for label in LABELS:
                    _, made = PromptLabel.objects.get_or_create(
                        agent_name=agent_name,
                        label=label,
                        defaults={"version": version, "moved_at": now},
                    )
                    if made:
                        moves.append(
                            PromptLabelMove.objects.create(
                                agent_name=agent_name,
                                label=label,
                                to_version=version,
                                kind=PromptLabelMoveKind.INITIAL,
                                moved_at=now,
                            )
                        )
        except IntegrityError:
            return _labels_read(agent_name)
        if created:
            _audit_created(version, None)
        for move in moves:
            _audit_moved(move, None)
    return _labels_read(agent_name)


def prompt_production(*, agent_name: str) -> PromptVersion:
    """The version new runs use: the one the ``production`` label points at. One query."""
    label = (
        PromptLabel.objects.select_related("version")
        .filter(agent_name=agent_name, label=PromptLabelName.PRODUCTION)
        .first()
    )
    if label is not None:
        return label.version
    return prompt_labels(agent_name=agent_name)[PromptLabelName.PRODUCTION]


# --- versions ----------------------------------------------------------------------------------


@transaction.atomic
def prompt_version_create(
    *, agent_name: str, template: str, note: str, user: User | None
) -> PromptVersion:
    """Store a new version (no label moves); PromptRefused and nothing saved if invalid.

    Numbers are handed out under the agent's label row locks (taken in label order, the
    same order every writer uses), so two operators saving at once get consecutive numbers.
    """
    agent = agent_get(agent_name)
    canonical = prompt_validate(agent=agent, template=template)
    prompt_labels(agent_name=agent_name)
    list(PromptLabel.objects.select_for_update().filter(agent_name=agent_name).order_by("label"))
    content_hash = prompt_hash(template=canonical)
    same = PromptVersion.objects.filter(agent_name=agent_name, content_hash=content_hash).first()
    if same is not None:
        raise PromptRefused(
            f"Version {same.number} has exactly this text already; nothing to save. "
            "To use it, move a label to it."
        )
    last = PromptVersion.objects.filter(agent_name=agent_name).order_by("-number").first()
    version = PromptVersion.objects.create(
        agent_name=agent_name,
        number=(last.number if last else 0) + 1,
        template=canonical,
        note=note.strip()[:500],
        created_by=user,
        content_hash=content_hash,
    )
    _audit_created(version, user)
    return version


def prompt_versions(*, agent_name: str) -> list[PromptVersion]:
    """An agent's versions, newest first, with who created them."""
    return list(
        PromptVersion.objects.filter(agent_name=agent_name)
        .select_related("created_by")
        .order_by("-number")
    )


def prompt_version_get(*, agent_name: str, number: int) -> PromptVersion | None:
    return (
        PromptVersion.objects.filter(agent_name=agent_name, number=number)
        .select_related("created_by")
        .first()
    )


def prompt_code_version(*, agent: Agent) -> PromptVersion | None:
    """The stored version holding the prompt the code declares now; None after a deploy
    changed ``system_prompt`` and nobody stored it yet (the prompt page says so)."""
    content_hash = prompt_hash(template=prompt_canonical(template=agent.system_prompt))
    return PromptVersion.objects.filter(agent_name=agent.name, content_hash=content_hash).first()


# --- labels ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str


def prompt_promotion_gate(*, agent_name: str, version: PromptVersion, label: str) -> GateResult:
    """Whether ``version`` may be promoted to ``label``. Not built yet: every version passes.

    The golden-dataset eval gate (a later issue) plugs in here: look up the stored result
    of an eval of this version over the agent's golden dataset and refuse the promotion
    (``passed=False`` with the reason a person can act on) when it is missing or below the
    bar. It runs under the label's row lock, so it must read a stored result, never run an
    eval. Its answer is recorded with the move and in the audit event either way.
    """
    return GateResult(passed=True, reason="passed: no eval gate configured yet")


def prompt_move_permission(*, label: str) -> str:
    """The permission that moving ``label`` needs."""
    return PROMOTE_PRODUCTION if label == PromptLabelName.PRODUCTION else CHANGE_PROMPTS


def _require(user: User, label: str) -> None:
    needed = prompt_move_permission(label=label)
    if not user.has_perm(needed):
        raise PermissionDenied(f"moving the {label} label needs the {needed} permission")


def prompt_label_previous(*, agent_name: str, label: str) -> list[PromptVersion]:
    """The versions ``label`` pointed at before and may roll back to, newest first."""
    current = PromptLabel.objects.filter(agent_name=agent_name, label=label).first()
    ids = set(
        PromptLabelMove.objects.filter(agent_name=agent_name, label=label).values_list(
            "to_version_id", flat=True
        )
    )
    if current is not None:
        ids.discard(current.version_id)
    return list(PromptVersion.objects.filter(pk__in=ids).order_by("-number"))


@transaction.atomic
def prompt_label_move(*, agent_name: str, label: str, number: int, user: User) -> PromptLabelMove:
    """Point ``label`` at version ``number``: a move (dev), a promotion or a rollback.

    1. The label must exist and the user must hold its permission (PermissionDenied).
    2. The label's row is locked, so concurrent moves take turns: the second one sees
       the first one's result (and is refused if it asked for the same thing), and each
       audit event records the version it really replaced.
    3. ``staging`` and ``production`` move only to the version the label below them
       points at (a promotion, through ``prompt_promotion_gate``) or back to a version
       they pointed at before (a rollback, no gate: it restores a known state fast).
    """
    if label not in PromptLabelName.values:
        raise PromptRefused(f"There is no label {label!r}; the labels are {', '.join(LABELS)}.")
    _require(user, label)
    prompt_labels(agent_name=agent_name)
    # No join in the locking query: when the row was moved while this one waited,
    # PostgreSQL re-checks the join against the old version row and returns nothing.
    row = PromptLabel.objects.select_for_update().get(agent_name=agent_name, label=label)
    target = PromptVersion.objects.filter(agent_name=agent_name, number=number).first()
    if target is None:
        raise PromptRefused(f"{agent_name} has no prompt version {number}.")
    current = PromptVersion.objects.get(pk=row.version_id)
    if current.pk == target.pk:
        raise PromptRefused(f"{label} already points at version {number}.")
    gate = ""
    if label == PromptLabelName.DEV:
        kind = PromptLabelMoveKind.MOVE
    else:
        source = PROMOTED_FROM[PromptLabelName(label)]
        source_version = PromptLabel.objects.select_related("version").get(
            agent_name=agent_name, label=source
        )
        previous = prompt_label_previous(agent_name=agent_name, label=label)
        if target.pk == source_version.version_id:
            kind = PromptLabelMoveKind.PROMOTION
            result = prompt_promotion_gate(agent_name=agent_name, version=target, label=label)
            if not result.passed:
                raise PromptRefused(
                    f"Version {number} may not be promoted to {label}: {result.reason}"
                )
            gate = result.reason
        elif target in previous:
            kind = PromptLabelMoveKind.ROLLBACK
        else:
            back = ", ".join(f"v{v.number}" for v in previous) or "none"
            raise PromptRefused(
                f"{label} can move only to the version {source} points at "
                f"(v{source_version.version.number}), or back to a version it pointed at "
                f"before ({back}); not to version {number}."
            )
    now = timezone.now()
    row.version = target
    row.moved_by = user
    row.moved_at = now
    row.save(update_fields=["version", "moved_by", "moved_at"])
    move = PromptLabelMove.objects.create(
        agent_name=agent_name,
        label=label,
        from_version=current,
        to_version=target,
        kind=kind,
        gate=gate,
        moved_by=user,
        moved_at=now,
    )
    _audit_moved(move, user)
    return move


def prompt_label_rows(*, agent_name: str) -> list[PromptLabel]:
    """The three labels in pipeline order, with their versions and who moved them last."""
    prompt_labels(agent_name=agent_name)
    rows = {
        row.label: row
        for row in PromptLabel.objects.select_related("version", "moved_by").filter(
            agent_name=agent_name
        )
    }
    return [rows[label] for label in LABELS]


def prompt_label_history(*, agent_name: str, limit: int = 50) -> list[PromptLabelMove]:
    """The latest label moves, newest first."""
    return list(
        PromptLabelMove.objects.filter(agent_name=agent_name)
        .select_related("from_version", "to_version", "moved_by")
        .order_by("-moved_at", "-id")[:limit]
    )


# --- diff --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptDiff:
    """A unified line diff from ``a`` to ``b``: (kind: "add" | "del" | "ctx" | "hunk", text)."""

    lines: list[tuple[str, str]]

    @property
    def changed(self) -> bool:
        return bool(self.lines)


def prompt_diff(*, a: PromptVersion, b: PromptVersion, context: int = 3) -> PromptDiff:
    """The change from version ``a`` to version ``b`` of the same agent's prompt."""
    diff = difflib.unified_diff(
        a.template.splitlines(), b.template.splitlines(), lineterm="", n=context
    )
    lines: list[tuple[str, str]] = []
    # The first two lines are the ---/+++ file headers; later lines may start with
    # "---" too (a deleted Markdown rule), so skip by position, not by prefix.
    for line in itertools.islice(diff, 2, None):
        kind = {"@": "hunk", "+": "add", "-": "del"}.get(line[:1], "ctx")
        lines.append((kind, line))
    return PromptDiff(lines=lines)


def prompt_ref_number(ref: str) -> int | None:
    """The version number in a recorded ref ("v3-1a2b3c4d5e" → 3); None for older formats."""
    head, _, _ = ref.partition("-")
    return int(head[1:]) if head.startswith("v") and head[1:].isdigit() else None
