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
