"""The form generator shared by the inbox's edit form and the submit page."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import pytest
from django import forms
from pydantic import BaseModel, Field, ValidationError

from agentdesk.schema_forms import SchemaForm, field_errors, initial_arguments
from examples.support.tools import IssueRefundArgs
from reviews.forms import ARGS_PREFIX
from reviews.forms import SchemaForm as ArgumentsForm


class _Shape(BaseModel):
    code: str | None = Field(default=None, pattern=r"^[A-Z]{2}$", max_length=2)
    count: int | None = Field(default=None, ge=1, le=3)
    kind: Literal["a", "b"] = "a"
    amount: Decimal
    tags: list[str] = []


def _form(data: dict[str, str] | None = None) -> SchemaForm:
    return SchemaForm(data, schema=_Shape.model_json_schema())


def test_an_optional_field_keeps_its_constraints() -> None:
    form = _form({"code": "abc", "count": "4", "amount": "1.5"})

    assert not form.is_valid()
    assert form.errors == {
        "code": [
            "Must match ^[A-Z]{2}$",
            "Ensure this value has at most 2 characters (it has 3).",
        ],
        "count": ["Ensure this value is less than or equal to 3."],
    }
    assert [form.fields[n].required for n in form.fields] == [False, False, False, True, False]


def test_the_cleaned_values_are_json_ready_arguments() -> None:
    form = _form({"code": "", "kind": "b", "amount": "14.00", "tags": '["x"]'})

    assert form.is_valid(), form.errors
    assert form.arguments() == {"kind": "b", "amount": "14.00", "tags": ["x"]}
    assert isinstance(form.fields["tags"], forms.JSONField)


def test_fields_before_are_the_pages_own_and_not_arguments() -> None:
    own = {"agent": forms.CharField()}
    form = SchemaForm(
        {"agent": "x", "amount": "2"}, schema=_Shape.model_json_schema(), fields_before=own
    )

    assert form.is_valid(), form.errors
    assert list(form.fields) == ["agent", "code", "count", "kind", "amount", "tags"]
    assert form.arguments() == {"amount": "2"}


def test_the_inbox_form_is_the_same_generator_under_its_prefix() -> None:
    schema = IssueRefundArgs.model_json_schema()
    inbox = ArgumentsForm(schema=schema)
    plain = SchemaForm(schema=schema)

    assert inbox.prefix == ARGS_PREFIX == "args"
    assert list(inbox.fields) == list(plain.fields) == list(schema["properties"])
    assert [type(f) for f in inbox.fields.values()] == [type(f) for f in plain.fields.values()]
    assert inbox["order_id"].html_name == "args-order_id"


def test_pydantic_errors_land_on_their_fields() -> None:
    with pytest.raises(ValidationError) as raised:
        _Shape.model_validate({"amount": "x", "code": "a"})
    errors = field_errors(raised.value.errors())
    assert errors == {
        "code": ["String should match pattern '^[A-Z]{2}$'"],
        "amount": ["Input should be a valid decimal"],
    }
    form = _form({"amount": "1"})
    assert form.is_valid()

    form.add_service_errors(errors)

    assert set(form.errors) == {"amount", "code"}


def test_initial_data_shows_rich_values_as_json() -> None:
    initial = initial_arguments(
        {"kind": "a", "tags": ["x"], "other": 1}, _Shape.model_json_schema()
    )

    assert initial == {"kind": "a", "tags": '[\n  "x"\n]'}
