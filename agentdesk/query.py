"""Query strings parsed by forms, so a bad parameter is a 400 that names it.

A query-string value goes into a database lookup or a date computation. Parsed ad hoc it
reaches PostgreSQL with a NUL character (refused as text: a 500), or a timedelta with ten
billion minutes (OverflowError: a 500). A Django form refuses both (CharField rejects NUL
characters, IntegerField takes bounds), and its errors say which parameter is wrong.
"""

from __future__ import annotations

from typing import TypeVar

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, BadRequest
from django.http import QueryDict

FormT = TypeVar("FormT", bound=forms.Form)


def query_form_or_400(form: FormT) -> FormT:
    """The bound form if valid; else BadRequest, whose message is shown on the 400 page."""
    if form.is_valid():
        return form
    problems = [
        f"{name}: {' '.join(str(message) for message in messages)}"
        if name != NON_FIELD_ERRORS
        else " ".join(str(message) for message in messages)
        for name, messages in form.errors.items()
    ]
    raise BadRequest("This address has a bad parameter. " + "; ".join(problems))


def query_number(params: QueryDict, name: str) -> int | None:
    """An optional whole-number parameter (a page cursor, a version to compare with).

    Absent or empty: None. Anything else that is not a whole number in range is a
    BadRequest: ``"²".isdigit()`` is true and ``int("²")`` fails, and ``int()`` refuses
    more than 4300 digits, so a digit check before ``int()`` is not enough.
    """
    raw = params.get(name, "")
    if not raw:
        return None
    try:
        number: int = forms.IntegerField(min_value=0, max_value=2**63 - 1).clean(raw)
    except forms.ValidationError as exc:
        problem = " ".join(exc.messages)
        raise BadRequest(f"This address has a bad parameter. {name}: {problem}") from None
    return number
