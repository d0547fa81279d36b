"""What configuration versions, prompt versions and releases share: numbered, immutable rows.

Each is numbered 1, 2, 3... per agent and never changed. Version 1 is made from the
agent's code the first time it is needed, race-safe; later numbers are handed out under
the lock of the agent's row number 1, so two people saving at once get consecutive
numbers rather than one error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.db import IntegrityError, models, transaction

Row = TypeVar("Row", bound=models.Model)


def version_first(
    model: type[Row],
    *,
    agent_name: str,
    defaults: Callable[[], dict[str, Any]],
    created: Callable[[Row], None],
) -> Row:
    """The agent's row number 1; the first time, made with ``defaults()``.

    The unique (agent, number) makes a second process that raced this one read the first
    one's row instead of adding its own; ``created`` (the audit event) runs only for the
    process whose row it is, in its transaction.
    """
    rows = model._default_manager.filter(agent_name=agent_name)
    first = rows.filter(number=1).first()
    if first is not None:
        return first
    with transaction.atomic():
        try:
            with transaction.atomic():  # a savepoint: the race's loser reads the winner's
                row, made = model._default_manager.get_or_create(
                    agent_name=agent_name, number=1, defaults=defaults()
                )
        except IntegrityError:
            return rows.get(number=1)
        if made:
            created(row)
        return row


def version_next_number(model: type[Row], *, first: Row) -> int:
    """The next number of ``first``'s agent, under the lock of its row 1 (in a transaction)."""
    rows = model._default_manager.filter(agent_name=first.agent_name)  # type: ignore[attr-defined]
    rows.select_for_update().filter(pk=first.pk).get()
    last = rows.order_by("-number").first()
    return (last.number if last else 0) + 1  # type: ignore[attr-defined]


def versions_of(model: type[Row], *, agent_name: str) -> list[Row]:
    """An agent's rows, newest first, with who created them."""
    return list(
        model._default_manager.filter(agent_name=agent_name)
        .select_related("created_by")
        .order_by("-number")
    )


def version_get(model: type[Row], *, agent_name: str, number: int) -> Row | None:
    return (
        model._default_manager.filter(agent_name=agent_name, number=number)
        .select_related("created_by")
        .first()
    )
