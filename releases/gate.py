"""The one place that decides whether a release may take a label: the promotion gate.

Called for every promotion (staging to dev's release, production to staging's) and every
activation of a configuration in production, under the label's row lock; never for a
rollback, which restores a known state fast. A pass is recorded on the move (``gate``)
and in its audit event; a refusal raises ReleaseRefused with the gate's reason, and the
move's transaction changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from releases.models import Release


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str


def promotion_gate(*, release: Release, label: str, kind: str) -> GateResult:
    """Whether ``release`` may be moved to ``label``. Not built yet: every release passes.

    The golden-dataset eval gate (the next issue) plugs in here: look up the stored result
    of an eval of this exact release (its prompt and configuration versions) over the
    agent's gating dataset, and refuse (``passed=False`` with a reason a person can act
    on) when it is missing, stale or below the bar. It runs under the label's row lock,
    so it must read a stored result, never run an eval.
    """
    return GateResult(passed=True, reason="passed: no eval gate configured yet")
