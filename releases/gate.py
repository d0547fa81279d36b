"""The one place that decides whether a release may take a label: the promotion gate.

Called for every promotion (staging to dev's release, production to staging's) and every
activation of a configuration in production, under the label's row lock; never for a
rollback, which restores a known state fast. A pass is recorded on the move (``gate``)
and in its audit event; a refusal raises ReleaseRefused with the gate's reason, and the
move's transaction changes nothing.

Staging takes any release dev points at. Production takes only a release with evidence
that it works: a passing eval of that exact release (its prompt and configuration
versions) on the agent's gating dataset, recent enough. That evidence lives in the evals
app, which this package must not import (evals depends on releases): the app registers
the check here in its AppConfig.ready (``gate_check_register``). With none registered,
production refuses every promotion: no gate installed is not a pass.

The check must read stored results, never run an eval: it runs under the label's lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from releases.models import LabelName, Release


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    # Where a person goes to act on a refusal (the eval pages), when the check knows.
    link: str = ""


GateCheck = Callable[[Release], GateResult]
_checks: list[GateCheck] = []


def gate_check_register(check: GateCheck | None) -> GateCheck | None:
    """Make ``check`` the production gate's evidence check; returns the one it replaces."""
    replaced = _checks[0] if _checks else None
    _checks[:] = [check] if check is not None else []
    return replaced


def promotion_gate(*, release: Release, label: str, kind: str) -> GateResult:
    """Whether ``release`` may be moved to ``label`` by a promotion or an activation."""
    if label != LabelName.PRODUCTION:
        return GateResult(passed=True, reason=f"passed: {label} takes any release from below")
    if not _checks:
        return GateResult(
            passed=False, reason="no eval gate is installed, so nothing vouches for it"
        )
    return _checks[0](release)
