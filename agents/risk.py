"""How much harm a wrong call can do: read by the tools' declarations and by the policy.

A leaf of its own because both sides need it: agents.definition declares tools with it and
carries each agent's policy, and policy.engine routes on it. Kept in either of them, it
tied the two into an import circle.
"""

from __future__ import annotations

from enum import StrEnum


class Risk(StrEnum):
    """How much harm a wrong call can do; the policy routes on it."""

    READ = "read"
    WRITE = "write"
    IRREVERSIBLE = "irreversible"
