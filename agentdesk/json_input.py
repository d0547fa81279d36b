"""JSON from outside (an API body, a JSON form field), checked once at the boundary.

``json.loads`` accepts things that break later, far from the request that sent them, as
a 500 instead of a 400:

- ``"\\u0000"``: PostgreSQL refuses a NUL character in text and jsonb ("\\u0000 cannot be
  converted to text"), so the write fails after validation has passed;
- a lone surrogate (``"\\ud800"``): not encodable as UTF-8, so hashing the input,
  building an error message or writing it fails;
- ``NaN``, ``Infinity`` and numbers too large for a float (``1e999``): not JSON, refused
  by jsonb, and unequal to themselves;
- deep nesting: ``[[[[...]]]]`` under the size limit raises RecursionError in the
  parser, or later in anything that walks the value (schema validation, hashing,
  redaction, templates).

``json_object_parse`` and ``JSONInputField`` refuse all of these with a message that says
which, at the path where it was found; what they return is safe to validate and store.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django import forms
from django.forms.fields import InvalidJSONInput, JSONString

# Deeper than any tool's arguments or an agent's input needs; shallow enough that every
# recursive walk of the value later (pydantic, the redaction, templates) stays far from
# Python's recursion limit.
MAX_DEPTH = 32

_SURROGATE = re.compile("[\ud800-\udfff]")


class JSONInputInvalid(ValueError):
    """The text is not JSON, or is JSON that AgentDesk refuses; the message says why."""


def _refuse_constant(name: str) -> float:
    raise JSONInputInvalid(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONInputInvalid(f"the number {text[:40]} is too large")
    return value


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (\\u0000)"
    if _SURROGATE.search(text):
        return "contains a lone surrogate (\\ud800-\\udfff), which is not valid Unicode"
    return None


def json_input_check(value: Any) -> None:
    """Refuse a parsed value that is nested too deeply or holds text PostgreSQL refuses.

    Iterative, so the check itself cannot overflow the stack whatever it is given.
    """
    pending: list[tuple[Any, str, int]] = [(value, "$", 1)]
    while pending:
        item, path, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise JSONInputInvalid(
                    f"{path} is nested more than {MAX_DEPTH} levels deep; flatten the data"
                )
            entries = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in entries:
                if isinstance(key, str) and (problem := _text_problem(key)):
                    raise JSONInputInvalid(f"a key in {path} {problem}")
                child_path = f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]"
                pending.append((child, child_path[:200], depth + 1))
        elif isinstance(item, str) and (problem := _text_problem(item)):
            raise JSONInputInvalid(f"the text at {path} {problem}")
        elif isinstance(item, float) and not math.isfinite(item):
            raise JSONInputInvalid(f"the number at {path} is not finite")


def json_input_loads(raw: bytes | str, *, what: str = "the body") -> Any:
    """Parse JSON text and check it (json_input_check); JSONInputInvalid says why not.

    ``what`` names the text in the messages ("the body", "the value").
    """
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except JSONInputInvalid:
        raise
    except RecursionError:
        raise JSONInputInvalid(
            f"{what} is nested too deeply (the limit is {MAX_DEPTH} levels)"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        # The decoder's message quotes no input, only a position: safe to return.
        raise JSONInputInvalid(f"{what} is not valid JSON: {exc}") from None
    json_input_check(value)
    return value


def json_object_parse(raw: bytes | str) -> dict[str, Any]:
    """Parse a request body that must be a JSON object; JSONInputInvalid says why not."""
    value = json_input_loads(raw)
    if not isinstance(value, dict):
        raise JSONInputInvalid("the body must be a JSON object")
    return value


class JSONInputField(forms.JSONField):
    """Django's JSONField with the same checks as an API body.

    Both ways in are covered: ``to_python`` (validation) and ``bound_data`` (the text put
    back into a form shown again with its errors), which Django parses separately.
    """

    def to_python(self, value: Any) -> Any:
        if self.disabled or value in self.empty_values or not isinstance(value, str):
            return super().to_python(value)
        try:
            converted = json_input_loads(value, what="the value")
        except JSONInputInvalid as exc:
            raise forms.ValidationError(str(exc), code="invalid") from None
        return JSONString(converted) if isinstance(converted, str) else converted

    def bound_data(self, data: Any, initial: Any) -> Any:
        if self.disabled or not isinstance(data, str):
            return super().bound_data(data, initial)
        try:
            return json_input_loads(data, what="the value")
        except JSONInputInvalid:
            return InvalidJSONInput(data)
