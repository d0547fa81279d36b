"""Django forms generated from a pydantic model's JSON schema.

Two pages edit data whose shape is declared in code: the inbox's edit form (a tool's
arguments) and the submit page (an agent's input). Both build their form here, so an agent
or a tool added in code gets a form without a template change, and the two cannot drift
apart. The form's own checks (lengths, patterns, choices) give quick messages; the service
validates the result with pydantic again, and its field errors are put back on the form
(``add_service_errors``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from django import forms
from django.core.validators import RegexValidator

from agentdesk.json_input import JSONInputField

_TEXTAREA_FROM = 240  # longer strings than this get a textarea


def _nullable_option(spec: dict[str, Any]) -> dict[str, Any]:
    """``X | None`` as pydantic writes it (``anyOf: [X, null]``): X's own constraints.

    Without this an optional field loses its pattern and lengths, and the form would let
    through what the service then refuses with a less precise message.
    """
    options = spec.get("anyOf")
    if not isinstance(options, list):
        return spec
    typed = [o for o in options if isinstance(o, dict) and o.get("type") != "null"]
    if len(typed) != 1 or len(typed) == len(options):
        return spec
    merged = {**typed[0], **{k: v for k, v in spec.items() if k != "anyOf"}}
    return merged


def schema_label(name: str, spec: Mapping[str, Any]) -> str:
    """A property's label: its schema title ("Order Id"), else its name ("Order id")."""
    return str(spec.get("title") or name.replace("_", " ").capitalize())


def schema_field(name: str, spec: dict[str, Any], required: bool) -> forms.Field:
    """One form field for one property of a pydantic model's JSON schema."""
    spec = _nullable_option(spec)
    common: dict[str, Any] = {
        "label": schema_label(name, spec),
        "required": required,
        "help_text": str(spec.get("description", "")),
    }
    if "enum" in spec:
        return forms.ChoiceField(choices=[(v, v) for v in spec["enum"]], **common)
    kinds = {spec.get("type")} | {
        option.get("type") for option in spec.get("anyOf", []) if isinstance(option, dict)
    }
    kinds.discard(None)
    kinds.discard("null")
    if kinds == {"boolean"}:
        return forms.BooleanField(**{**common, "required": False})
    if kinds == {"integer"}:
        return forms.IntegerField(
            min_value=spec.get("minimum"), max_value=spec.get("maximum"), **common
        )
    if "number" in kinds:
        # pydantic describes Decimal as number-or-string; a DecimalField keeps the digits.
        return forms.DecimalField(
            min_value=spec.get("minimum"),
            max_value=spec.get("maximum"),
            widget=forms.TextInput(attrs={"inputmode": "decimal", "class": "amount-input"}),
            **common,
        )
    if kinds == {"string"}:
        validators = []
        if "pattern" in spec:
            validators.append(
                RegexValidator(spec["pattern"], message=f"Must match {spec['pattern']}")
            )
        max_length = spec.get("maxLength")
        # Identifiers (a pattern) and short strings fit one line; prose gets a textarea.
        short = "pattern" in spec or (max_length is not None and max_length <= _TEXTAREA_FROM)
        rows = 2 if max_length is not None and max_length <= 600 else 6
        return forms.CharField(
            max_length=max_length,
            min_length=spec.get("minLength"),
            validators=validators,
            strip=False,
            widget=forms.TextInput() if short else forms.Textarea(attrs={"rows": rows}),
            **common,
        )
    # Objects, arrays and anything richer: edited as JSON.
    return JSONInputField(widget=forms.Textarea(attrs={"rows": 4, "class": "mono"}), **common)


class SchemaForm(forms.Form):
    """A form for a pydantic model's fields, built from ``model.model_json_schema()``.

    ``fields_before`` are fields of the page's own (the submit page's agent) put ahead of
    the generated ones; ``arguments()`` leaves them out.
    """

    def __init__(
        self,
        *args: Any,
        schema: dict[str, Any],
        fields_before: Mapping[str, forms.Field] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._own = dict(fields_before or {})
        self.fields.update(self._own)
        required = set(schema.get("required", []))
        for name, spec in schema.get("properties", {}).items():
            if name in self._own:
                raise ValueError(f"the schema declares {name!r}, a name this form uses itself")
            self.fields[name] = schema_field(name, spec, name in required)

    def arguments(self) -> dict[str, Any]:
        """The cleaned values as JSON-ready arguments (decimals as strings)."""
        values: dict[str, Any] = {}
        for name, value in self.cleaned_data.items():
            if name in self._own:
                continue
            if value is None or value == "":
                if self.fields[name].required:
                    values[name] = value
                continue
            if isinstance(value, Decimal):
                value = str(value)
            elif isinstance(value, str):
                value = value.replace("\r\n", "\n")  # browsers send textarea lines as CRLF
            values[name] = value
        return values

    def add_service_errors(self, field_errors: dict[str, list[str]]) -> None:
        """Put pydantic's errors (keyed by location, "items.0.sku") on the right fields."""
        for location, messages in field_errors.items():
            field = location.split(".")[0]
            for message in messages:
                self.add_error(field if field in self.fields else None, message)


def field_errors(pydantic_errors: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """pydantic's error list (``exc.errors()`` or its JSON) keyed by dotted location."""
    errors: dict[str, list[str]] = {}
    for error in pydantic_errors:
        name = ".".join(str(part) for part in error.get("loc", ())) or "__all__"
        errors.setdefault(name, []).append(str(error.get("msg", "")))
    return errors


def initial_arguments(arguments: Mapping[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments (or an input) as form initial data; rich values as pretty JSON."""
    initial: dict[str, Any] = {}
    for name, spec in schema.get("properties", {}).items():
        if name not in arguments:
            continue
        value = arguments[name]
        simple = isinstance(value, str | int | float | bool) or value is None
        initial[name] = value if simple or "enum" in spec else json.dumps(value, indent=2)
    return initial
