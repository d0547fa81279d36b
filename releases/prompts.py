"""Prompt versions: an agent's system prompt as immutable, numbered versions.

The prompt an agent declares in code (``Agent.system_prompt``) is the starting point; from
its first use on, the database holds the prompt as numbered, immutable ``PromptVersion``
rows. Which one runs is not decided here: a release pins one prompt version with one
configuration version, and labels point at releases (``releases.services``). New runs
record the prompt version of their release (``PromptVersion.ref``, such as
``v3-1a2b3c4d5e``) on the run and on every step.

``prompt_version_create`` validates a template (not empty; every ``$placeholder`` is one
the agent's ``prompt_context`` provides; no stray ``$``) and stores it as the next number.
Nothing is saved when anything is wrong, nor when the same text is stored already. A run
renders its system prompt once, when it is created, so a run in flight keeps the text it
started with whatever moves later.

Every new version writes its audit event (``prompt.version_created``, object
``prompt:<agent>``) in the same transaction.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
from dataclasses import dataclass
from string import Template
from typing import TYPE_CHECKING

from django.db import transaction

from agents.definition import Agent
from agents.registry import agent_get
from audit.log import audit_record
from audit.models import AuditVerb
from releases.models import PromptVersion
from releases.versioning import version_first, version_get, version_next_number, versions_of

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from pydantic import BaseModel

AUDIT_OBJECT = "prompt"
VIEW_PROMPTS = "releases.view_promptversion"
CHANGE_PROMPTS = "releases.change_promptversion"
MAX_TEMPLATE_CHARS = 100_000


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
        verb=AuditVerb.PROMPT_VERSION_CREATED,
        object_type=AUDIT_OBJECT,
        object_id=version.agent_name,
        after={
            "number": version.number,
            "ref": version.ref,
            "note": version.note,
            "content_hash": version.content_hash,
        },
    )


def prompt_version_first(*, agent_name: str) -> PromptVersion:
    """The agent's version 1; the first time, made from the prompt its code declares."""
    template = prompt_canonical(template=agent_get(agent_name).system_prompt)
    return version_first(
        PromptVersion,
        agent_name=agent_name,
        defaults=lambda: {
            "template": template,
            "note": "Declared in code (the agent's system prompt at first use).",
            "content_hash": prompt_hash(template=template),
        },
        created=lambda version: _audit_created(version, None),
    )


# --- versions ----------------------------------------------------------------------------------


@transaction.atomic
def prompt_version_create(
    *, agent_name: str, template: str, note: str, user: User | None
) -> PromptVersion:
    """Store a new version (no label moves); PromptRefused and nothing saved if invalid.

    Numbers are handed out under the lock of the agent's version 1 row, so two operators
    saving at once get consecutive numbers rather than one error.
    """
    agent = agent_get(agent_name)
    canonical = prompt_validate(agent=agent, template=template)
    number = version_next_number(PromptVersion, first=prompt_version_first(agent_name=agent_name))
    content_hash = prompt_hash(template=canonical)
    same = PromptVersion.objects.filter(agent_name=agent_name, content_hash=content_hash).first()
    if same is not None:
        raise PromptRefused(
            f"Version {same.number} has exactly this text already; nothing to save. "
            "To use it, make a release of it."
        )
    version = PromptVersion.objects.create(
        agent_name=agent_name,
        number=number,
        template=canonical,
        note=note.strip()[:500],
        created_by=user,
        content_hash=content_hash,
    )
    _audit_created(version, user)
    return version


def prompt_versions(*, agent_name: str) -> list[PromptVersion]:
    """An agent's versions, newest first, with who created them."""
    return versions_of(PromptVersion, agent_name=agent_name)


def prompt_version_get(*, agent_name: str, number: int) -> PromptVersion | None:
    return version_get(PromptVersion, agent_name=agent_name, number=number)


def prompt_code_version(*, agent: Agent) -> PromptVersion | None:
    """The stored version holding the prompt the code declares now; None after a deploy
    changed ``system_prompt`` and nobody stored it yet (the prompt page says so)."""
    content_hash = prompt_hash(template=prompt_canonical(template=agent.system_prompt))
    return PromptVersion.objects.filter(agent_name=agent.name, content_hash=content_hash).first()


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
