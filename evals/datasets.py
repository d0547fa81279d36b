"""Golden datasets: create, change (every change a new immutable version), import, export.

1. ``dataset_create`` names a dataset of an agent and stores its version 1 (possibly
   empty). ``dataset_commit`` stores a whole new list of examples as the next version;
   ``dataset_add``, ``dataset_example_replace`` and ``dataset_examples_remove`` are the
   common changes, each made on the latest version. Every list is checked against the
   agent's code first (``evals.examples``): nothing is stored when any example is wrong,
   and the error names each place. A list equal to the latest version's is refused.
2. ``dataset_import_jsonl`` reads one example per line; an error names the line.
   ``dataset_export_jsonl`` writes a version back in the same form.
3. ``candidates_accept`` turns reviewers' corrections (``reviews.GoldenCandidate``) into
   step examples of a new version and marks them accepted; ``candidate_discard`` marks one
   discarded. A candidate is accepted or discarded once: concurrent curators take turns on
   its row, and the second is refused.

Numbers are handed out under the dataset row's lock, so two curators saving at once get
consecutive versions. Every version and every curation writes its audit event in the
same transaction (``dataset.version_created``, ``candidate.accepted``,
``candidate.discarded``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction

from agentdesk.redaction import redact_value
from agents.registry import UnknownAgent, agent_get
from audit.log import audit_record
from audit.models import AuditVerb
from evals.examples import ExamplesRefused, example_checked, examples_checked
from evals.gate import GateRules
from evals.models import Dataset, DatasetVersion
from reviews.models import CandidateStatus, GoldenCandidate

if TYPE_CHECKING:
    from django.contrib.auth.models import User

MAX_JSONL_BYTES = 10_000_000


class DatasetRefused(ValueError):
    """A dataset change that cannot be made; the message says why, for a person."""


def _hash(examples: Sequence[dict[str, Any]]) -> str:
    blob = json.dumps(examples, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _checked(agent_name: str, examples: Sequence[Any]) -> list[dict[str, Any]]:
    try:
        agent = agent_get(agent_name)
    except UnknownAgent:
        raise DatasetRefused(f"There is no agent {agent_name!r}.") from None
    return examples_checked(agent, examples)


def dataset_latest(*, dataset: Dataset) -> DatasetVersion | None:
    return dataset.versions.order_by("-number").first()


def dataset_version_get(*, dataset: Dataset, number: int) -> DatasetVersion | None:
    return dataset.versions.filter(number=number).first()


def _version_store(
    dataset: Dataset, examples: list[dict[str, Any]], note: str, user: User | None
) -> DatasetVersion:
    """The next version of ``dataset`` (the caller holds its row lock).

    Redacted here, the one writer of a version: examples are copied from runs and
    corrections, imported and typed, and they outlive all of those.
    """
    examples = redact_value(examples)
    latest = dataset_latest(dataset=dataset)
    content_hash = _hash(examples)
    if latest is not None and latest.content_hash == content_hash:
        raise DatasetRefused(
            f"Version {latest.number} holds exactly these examples already; nothing to save."
        )
    version = DatasetVersion.objects.create(
        dataset=dataset,
        number=(latest.number if latest else 0) + 1,
        examples=examples,
        content_hash=content_hash,
        note=note.strip()[:500],
        created_by=user,
    )
    audit_record(
        actor=user,
        verb=AuditVerb.DATASET_VERSION_CREATED,
        object_type="dataset",
        object_id=str(dataset.pk),
        before={"number": latest.number if latest else None},
        after={
            "dataset": str(dataset),
            "number": version.number,
            "examples": len(examples),
            "content_hash": content_hash,
            "note": version.note,
        },
    )
    return version


@transaction.atomic
def dataset_create(
    *,
    agent_name: str,
    name: str,
    user: User | None,
    description: str = "",
    examples: Sequence[Any] = (),
    note: str = "",
) -> DatasetVersion:
    """A new dataset of ``agent_name`` and its version 1; DatasetRefused if the name is taken."""
    checked = _checked(agent_name, examples)
    try:
        with transaction.atomic():
            dataset = Dataset.objects.create(
                agent_name=agent_name,
                name=name,
                description=description.strip()[:500],
                created_by=user,
            )
    except IntegrityError:
        raise DatasetRefused(f"{agent_name} has a dataset named {name!r} already.") from None
    return _version_store(dataset, checked, note or "Created.", user)


def _locked(dataset: Dataset) -> Dataset:
    return Dataset.objects.select_for_update().get(pk=dataset.pk)


@transaction.atomic
def dataset_commit(
    *, dataset: Dataset, examples: Sequence[Any], note: str, user: User | None
) -> DatasetVersion:
    """Store ``examples`` as the next version; ExamplesRefused (every error) if any is wrong."""
    checked = _checked(dataset.agent_name, examples)
    return _version_store(_locked(dataset), checked, note, user)


def _latest_examples(dataset: Dataset) -> list[dict[str, Any]]:
    latest = dataset_latest(dataset=dataset)
    return list(latest.examples) if latest else []


@transaction.atomic
def dataset_add(
    *, dataset: Dataset, examples: Sequence[Any], note: str, user: User | None
) -> DatasetVersion:
    """The latest version's examples and ``examples`` after them, as the next version."""
    locked = _locked(dataset)
    return dataset_commit(
        dataset=locked, examples=[*_latest_examples(locked), *examples], note=note, user=user
    )


@transaction.atomic
def dataset_example_replace(
    *, dataset: Dataset, example_id: str, example: Any, note: str, user: User | None
) -> DatasetVersion:
    """The latest version with the example ``example_id`` replaced by ``example``."""
    locked = _locked(dataset)
    current = _latest_examples(locked)
    index = next((i for i, e in enumerate(current) if e["id"] == example_id), None)
    if index is None:
        raise DatasetRefused(f"The latest version of {locked} has no example {example_id!r}.")
    current[index] = example
    return dataset_commit(dataset=locked, examples=current, note=note, user=user)


@transaction.atomic
def dataset_examples_remove(
    *, dataset: Dataset, example_ids: Sequence[str], note: str, user: User | None
) -> DatasetVersion:
    """The latest version without the examples ``example_ids`` (each must be there)."""
    locked = _locked(dataset)
    current = _latest_examples(locked)
    missing = sorted(set(example_ids) - {e["id"] for e in current})
    if missing:
        raise DatasetRefused(f"The latest version of {locked} has no example {missing[0]!r}.")
    kept = [e for e in current if e["id"] not in set(example_ids)]
    return dataset_commit(dataset=locked, examples=kept, note=note, user=user)


# --- JSONL -------------------------------------------------------------------------------------


def jsonl_examples(*, agent_name: str, text: str) -> list[dict[str, Any]]:
    """The examples of a JSONL text (one object per line, blank lines skipped), checked.

    ExamplesRefused lists every bad line at once: ``line 7: ...``, naming the field.
    """
    if len(text.encode()) > MAX_JSONL_BYTES:
        raise ExamplesRefused([f"The file is larger than {MAX_JSONL_BYTES} bytes."])
    try:
        agent = agent_get(agent_name)
    except UnknownAgent:
        raise DatasetRefused(f"There is no agent {agent_name!r}.") from None
    examples: list[dict[str, Any]] = []
    errors: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"line {number}: not JSON ({exc.msg} at column {exc.colno})")
            continue
        example, found = example_checked(agent, raw, where=f"line {number}")
        errors += found
        if example:
            examples.append(example)
    if errors:
        raise ExamplesRefused(errors)
    # The whole list's checks (ids unique, the limit), in the lines' terms.
    examples_checked(agent, examples)
    return examples


@transaction.atomic
def dataset_import_jsonl(
    *, dataset: Dataset, text: str, note: str, user: User | None, replace: bool = False
) -> DatasetVersion:
    """The examples of a JSONL text after the latest version's (or instead, ``replace``)."""
    examples = jsonl_examples(agent_name=dataset.agent_name, text=text)
    if replace:
        return dataset_commit(dataset=dataset, examples=examples, note=note, user=user)
    return dataset_add(dataset=dataset, examples=examples, note=note, user=user)


def dataset_export_jsonl(*, version: DatasetVersion) -> str:
    """A version as JSONL: one example per line, keys sorted, what an import reads back."""
    return "".join(
        json.dumps(example, sort_keys=True, ensure_ascii=False) + "\n"
        for example in version.examples
    )


# --- reviewers' corrections ------------------------------------------------------------------


def _before_the_call(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation up to the model's reply that proposed the corrected call."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "assistant" and messages[i].get("tool_calls"):
            return messages[:i]
    return messages


def candidate_example(*, candidate: GoldenCandidate) -> dict[str, Any]:
    """A step example from a correction: an edit's arguments expected exactly, or, for a
    rejection, no call of the tool, with the reviewer's feedback as the reason."""
    tool = candidate.proposal.get("tool", "")
    correction = candidate.correction
    example: dict[str, Any] = {
        "kind": "step",
        "id": f"candidate-{candidate.pk}",
        "source": {"candidate": candidate.pk, "run": str(candidate.run_id)},
        "messages": _before_the_call(list(candidate.messages or [])),
        "input": candidate.run.input,
    }
    if correction.get("expired"):
        # Nobody decided: the SLA's default ran. A curator accepts it only if it was right.
        example["tags"] = ["sla-default"]
    if correction.get("kind") == "edit":
        example["expected_calls"] = [
            {
                "tool": tool,
                "arguments": {
                    name: {"mode": "exact", "value": value}
                    for name, value in (correction.get("arguments") or {}).items()
                },
            }
        ]
        example["reason"] = candidate.reason
    else:
        example["forbidden_tools"] = [tool]
        example["reason"] = correction.get("feedback") or candidate.reason
    return example


@transaction.atomic
def candidates_accept(
    *,
    dataset: Dataset,
    candidate_ids: Sequence[int],
    user: User | None,
    note: str = "",
    examples: dict[int, Any] | None = None,
) -> DatasetVersion:
    """The candidates as step examples of the next version; each marked accepted.

    ``examples``: a curator's edited example per candidate id, instead of the one the
    correction gives. A candidate of another agent, one already curated, or one whose
    conversation was not kept (filed before it was) is refused, and nothing changes.
    """
    locked = _locked(dataset)
    candidates = list(
        GoldenCandidate.objects.select_for_update()
        .filter(pk__in=candidate_ids)
        .order_by("created_at", "id")
    )
    found = {c.pk for c in candidates}
    missing = [pk for pk in candidate_ids if pk not in found]
    if missing:
        raise DatasetRefused(f"There is no candidate {missing[0]}.")
    new = []
    for candidate in candidates:
        if candidate.agent_name != locked.agent_name:
            raise DatasetRefused(
                f"Candidate {candidate.pk} is a correction of the {candidate.agent_name} "
                f"agent, not of {locked.agent_name}."
            )
        if candidate.status != CandidateStatus.CANDIDATE:
            raise DatasetRefused(f"Candidate {candidate.pk} was {candidate.status} already.")
        edited = (examples or {}).get(candidate.pk)
        example = edited if edited is not None else candidate_example(candidate=candidate)
        if not example.get("messages"):
            raise DatasetRefused(
                f"Candidate {candidate.pk} was filed before its conversation was kept: write "
                "its example by hand."
            )
        new.append(example)
    version = dataset_commit(
        dataset=locked,
        examples=[*_latest_examples(locked), *new],
        note=note or f"Accepted {len(new)} correction(s).",
        user=user,
    )
    for candidate in candidates:
        candidate.status = CandidateStatus.ACCEPTED
        candidate.save(update_fields=["status"])
        audit_record(
            actor=user,
            verb=AuditVerb.CANDIDATE_ACCEPTED,
            object_type="golden_candidate",
            object_id=str(candidate.pk),
            after={"dataset": str(locked), "version": version.number},
        )
    return version


@transaction.atomic
def candidate_discard(*, candidate_id: int, user: User | None, reason: str = "") -> None:
    """Mark a candidate discarded; refused if it was curated already."""
    candidate = GoldenCandidate.objects.select_for_update().filter(pk=candidate_id).first()
    if candidate is None:
        raise DatasetRefused(f"There is no candidate {candidate_id}.")
    if candidate.status != CandidateStatus.CANDIDATE:
        raise DatasetRefused(f"Candidate {candidate.pk} was {candidate.status} already.")
    candidate.status = CandidateStatus.DISCARDED
    candidate.save(update_fields=["status"])
    audit_record(
        actor=user,
        verb=AuditVerb.CANDIDATE_DISCARDED,
        object_type="golden_candidate",
        object_id=str(candidate.pk),
        after={"reason": reason.strip()[:500]},
    )


# --- the gate --------------------------------------------------------------------------------

OVERRIDE_GATE = "releases.override_promotion_gate"


@transaction.atomic
def dataset_gate_set(
    *, dataset: Dataset, gating: bool, rules: dict[str, Any], user: User
) -> Dataset:
    """Make ``dataset`` the agent's gating dataset (or not), with its gate's rules.

    A gate may be made stricter by anyone who may change datasets; loosening it would let
    releases reach production that the gate stops today, so once an agent has a gating
    dataset, every change of it (moving the gate, taking it away, new floors or
    allowance) needs the override permission too. Validated by evals.gate.GateRules:
    unknown metrics, floors outside 0..1 or a negative allowance are refused.
    """
    if not user.has_perm("evals.change_dataset"):
        raise PermissionDenied("changing a dataset needs the evals.change_dataset permission")
    locked = _locked(dataset)
    current = (
        Dataset.objects.select_for_update()
        .filter(agent_name=dataset.agent_name, gating=True)
        .first()
    )
    rules = {key: value for key, value in rules.items() if value not in (None, {}, "")}
    try:
        checked = GateRules.of(Dataset(gate=rules))
    except (TypeError, ValueError) as exc:
        raise DatasetRefused(f"The gate's rules are not valid: {exc}") from None
    if any(not 0 <= floor <= 1 for floor in checked.floors.values()):
        raise DatasetRefused("A floor is a score from 0 to 1.")
    if checked.allowance_points < 0 or checked.max_errors < 0:
        raise DatasetRefused("The allowance and the errors allowed are 0 or more.")
    if (locked.gating, locked.gate) == (gating, rules):
        raise DatasetRefused("That is the gate as it is.")
    if current is not None and not user.has_perm(OVERRIDE_GATE):
        raise PermissionDenied(
            f"{dataset.agent_name} is gated by {current.name}: changing its gate needs the "
            f"{OVERRIDE_GATE} permission"
        )
    before = {"gating": current.name if current else None, "gate": current.gate if current else {}}
    if current is not None and current.pk != locked.pk:
        current.gating = False
        current.save(update_fields=["gating"])
    locked.gating = gating
    locked.gate = rules if gating else {}
    locked.save(update_fields=["gating", "gate"])
    audit_record(
        actor=user,
        verb=AuditVerb.DATASET_GATE_CHANGED,
        object_type="dataset",
        object_id=str(locked),
        before=before,
        after={"gating": locked.name if gating else None, "gate": locked.gate},
    )
    return locked
