"""Forms of the curation pages. They validate; ``evals.datasets`` and ``evals.curation``
check the examples against the agent's code and save.

The expectation form is a tool's arguments as ``agentdesk.schema_forms`` generates them
(the inbox's edit form), each with a match mode beside it: ``exact`` and ``tolerance``
compare with the value, ``one_of`` with a JSON list of options, ``any`` accepts anything.
"""

from __future__ import annotations

import contextlib
from decimal import Decimal
from typing import Any

from django import forms

from agentdesk import schema_forms
from agentdesk.json_input import JSONInputField
from agents.definition import Agent, Tool
from evals.datasets import MAX_JSONL_BYTES
from evals.models import DatasetVersion
from evals.selectors import NotFound, dataset_version_named, release_named
from releases.models import Release

MODES = [
    ("exact", "exact"),
    ("tolerance", "within a tolerance"),
    ("one_of", "one of"),
    ("any", "any value"),
]
TAGS_MAX = 20
TAG_MAX_LENGTH = 50


def tags_parse(text: str) -> list[str]:
    """``"refund, edge case,refund"`` as ``["refund", "edge case"]``: trimmed, in order."""
    tags: list[str] = []
    for raw in text.split(","):
        tag = " ".join(raw.split())
        if tag and tag not in tags:
            tags.append(tag)
    return tags


class TagsField(forms.CharField):
    """Comma-separated tags, cleaned to a list."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", 1000)
        kwargs.setdefault("help_text", "Comma-separated, e.g. refund, damaged")
        super().__init__(**kwargs)

    def clean(self, value: Any) -> list[str]:
        tags = tags_parse(str(super().clean(value) or ""))
        if len(tags) > TAGS_MAX:
            raise forms.ValidationError(f"At most {TAGS_MAX} tags.")
        long = [tag for tag in tags if len(tag) > TAG_MAX_LENGTH]
        if long:
            raise forms.ValidationError(
                f"A tag has at most {TAG_MAX_LENGTH} characters ({long[0][:20]}… is longer)."
            )
        return tags


def _note_field(placeholder: str = "what changed, for the record") -> forms.CharField:
    return forms.CharField(
        label="Note (optional)",
        required=False,
        max_length=500,
        widget=forms.TextInput(attrs={"placeholder": placeholder}),
    )


class OptionsField(JSONInputField):
    """A JSON list of options; shown empty, not as ``null``, when there are none."""

    def prepare_value(self, value: Any) -> Any:
        return "" if value is None else super().prepare_value(value)


class DatasetForm(forms.Form):
    name = forms.SlugField(
        max_length=64, help_text="Letters, digits, - and _: e.g. gating, refunds-edge-cases"
    )
    description = forms.CharField(required=False, max_length=500)


class DatasetChoiceForm(forms.Form):
    """Which of the agent's datasets the accepted example goes to."""

    dataset = forms.ChoiceField(label="Into dataset")

    def __init__(self, *args: Any, dataset_names: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["dataset"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(name, name) for name in dataset_names]


class AcceptForm(DatasetChoiceForm):
    tags = TagsField()
    note = _note_field()


class DiscardForm(forms.Form):
    reason = forms.CharField(label="Why (optional)", required=False, max_length=500)


class RemoveForm(forms.Form):
    ids = forms.MultipleChoiceField(label="Examples", choices=())
    note = _note_field()

    def __init__(self, *args: Any, example_ids: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["ids"]
        assert isinstance(field, forms.MultipleChoiceField)
        field.choices = [(pk, pk) for pk in example_ids]
        field.error_messages["required"] = "Tick at least one example to remove."
        field.error_messages["invalid_choice"] = (
            "%(value)s is not an example of the latest version (it changed meanwhile?)."
        )


class ExampleForm(forms.Form):
    example = forms.CharField(
        label="Example (JSON)",
        widget=forms.Textarea(attrs={"rows": 22, "class": "mono", "spellcheck": "false"}),
        max_length=200_000,
        strip=False,
    )
    note = _note_field()


class ImportForm(forms.Form):
    file = forms.FileField(label="JSONL file", help_text="One example per line, UTF-8.")
    replace = forms.BooleanField(
        required=False,
        label="Replace the examples",
        help_text="Unticked, the file's examples come after the latest version's.",
    )
    note = _note_field()

    def clean_file(self) -> str:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_JSONL_BYTES:
            raise forms.ValidationError(f"The file is larger than {MAX_JSONL_BYTES} bytes.")
        try:
            return str(upload.read().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise forms.ValidationError(
                f"The file is not UTF-8 text (byte {exc.start} is not)."
            ) from None


# --- the expectation form -------------------------------------------------------------------


class ValuesForm(schema_forms.SchemaForm):
    """A tool's arguments (agentdesk.schema_forms), named ``value-<name>``."""

    prefix = "value"


class ExpectationForm(DatasetChoiceForm):
    """A step example's expectation, a curator's edit of what a correction gives.

    Each argument of the tool has a mode (``mode_<name>``), a value (the generated
    ``value-<name>``), a tolerance (``tolerance_<name>``) and options (``options_<name>``,
    a JSON list); ``expect_call`` expects the call, ``forbid_tool`` forbids the tool.
    """

    expect_call = forms.BooleanField(required=False, label="Expect this call")
    forbid_tool = forms.BooleanField(required=False, label="Forbid this tool")
    reason = forms.CharField(
        label="Why (the reviewer's reason or feedback)",
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    tags = TagsField()
    note = _note_field()

    def __init__(
        self,
        data: Any = None,
        *,
        tool: Tool,
        dataset_names: list[str],
        initial: dict[str, Any] | None = None,
        value_initial: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(data, dataset_names=dataset_names, initial=initial)
        self.tool = tool
        schema = tool.input_schema.model_json_schema()
        # Not required here: an argument matched by one_of or any needs no value.
        self.values = ValuesForm(
            data, schema={**schema, "required": []}, initial=value_initial or {}
        )
        self.argument_names = list(schema.get("properties", {}))
        for name in self.argument_names:
            self.fields[f"mode_{name}"] = forms.ChoiceField(
                choices=MODES, initial="exact", label=f"{name}: match"
            )
            self.fields[f"tolerance_{name}"] = forms.DecimalField(
                required=False,
                min_value=Decimal(0),
                label=f"{name}: tolerance",
                widget=forms.TextInput(attrs={"inputmode": "decimal", "size": 6}),
            )
            self.fields[f"options_{name}"] = OptionsField(
                required=False,
                label=f"{name}: options",
                help_text='A JSON list, e.g. ["SO-1002", "SO-1003"]',
                widget=forms.TextInput(attrs={"class": "mono"}),
            )

    def is_valid(self) -> bool:
        valid = super().is_valid() & self.values.is_valid()  # both: every error at once
        if not super().is_valid() or not self.cleaned_data["expect_call"]:
            return valid
        values = self.values.arguments()  # the valid ones
        for name in self.argument_names:
            mode = self.cleaned_data.get(f"mode_{name}")
            missing = values.get(name) is None and name not in self.values.errors
            if mode in ("exact", "tolerance") and missing:
                self.values.add_error(name, "Give a value, or match any value.")
            if mode == "tolerance" and self.cleaned_data.get(f"tolerance_{name}") is None:
                self.add_error(f"tolerance_{name}", "Give the tolerance.")
            if mode == "one_of" and not isinstance(self.cleaned_data.get(f"options_{name}"), list):
                self.add_error(f"options_{name}", "Give the options as a JSON list.")
        return not (self.errors or self.values.errors)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("expect_call") and not data.get("forbid_tool"):
            raise forms.ValidationError("Expect the call, forbid the tool, or both.")
        return data

    def rows(self) -> list[dict[str, Any]]:
        """Per argument, its four fields, for the template."""
        return [
            {
                "name": name,
                "mode": self[f"mode_{name}"],
                "value": self.values[name],
                "tolerance": self[f"tolerance_{name}"],
                "options": self[f"options_{name}"],
            }
            for name in self.argument_names
        ]

    def arguments(self) -> dict[str, dict[str, Any]]:
        """The argument matches as the example stores them (after ``is_valid``)."""
        values = self.values.arguments()
        matches: dict[str, dict[str, Any]] = {}
        for name in self.argument_names:
            mode = self.cleaned_data[f"mode_{name}"]
            value = values.get(name)
            if mode == "any":
                matches[name] = {"mode": "any"}
            elif mode == "one_of":
                matches[name] = {"mode": "one_of", "options": self.cleaned_data[f"options_{name}"]}
            elif mode == "tolerance":
                tolerance = self.cleaned_data[f"tolerance_{name}"]
                number: Any = value
                # Not a number: the examples' check names the argument and what is wrong.
                with contextlib.suppress(TypeError, ValueError):
                    number = float(value) if value is not None else None
                matches[name] = {
                    "mode": "tolerance",
                    "value": number,
                    "tolerance": float(tolerance) if tolerance is not None else None,
                }
            else:
                matches[name] = {"mode": "exact", "value": value}
        return matches

    def example(self, base: dict[str, Any]) -> dict[str, Any]:
        """``base`` (the example the correction gives) with this form's expectation."""
        data = self.cleaned_data
        return {
            **base,
            "tags": data["tags"],
            "reason": data["reason"].strip(),
            "expected_calls": (
                [{"tool": self.tool.name, "arguments": self.arguments()}]
                if data["expect_call"]
                else []
            ),
            "forbidden_tools": [self.tool.name] if data["forbid_tool"] else [],
        }


class EvalStartForm(forms.Form):
    """Which release to run over which dataset version (the latest by default)."""

    release = forms.CharField(
        max_length=20, help_text="A release number, or a label: dev, staging, production."
    )
    dataset = forms.CharField(max_length=80, help_text="A dataset name, or name@version.")

    def __init__(self, *args: Any, agent: Agent, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.agent = agent

    def clean_release(self) -> Release:
        try:
            return release_named(agent_name=self.agent.name, name=self.cleaned_data["release"])
        except NotFound as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_dataset(self) -> DatasetVersion:
        try:
            return dataset_version_named(
                agent_name=self.agent.name, name=self.cleaned_data["dataset"]
            )
        except NotFound as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "dataset" in cleaned:
            cleaned["dataset_version"] = cleaned["dataset"]
        return cleaned


class GateForm(forms.Form):
    """Whether the dataset gates promotions to production, and with which rules."""

    gating = forms.BooleanField(required=False, label="Gate promotions to production on it")
    floors = JSONInputField(
        required=False,
        help_text='Lowest mean per metric, e.g. {"tool_selection": 0.9, "task_completion": 0.8}',
    )
    allowance_points = forms.FloatField(
        required=False,
        min_value=0,
        help_text="Points a metric may fall against production's eval (empty: 2).",
    )

    def clean_floors(self) -> dict[str, Any]:
        floors = self.cleaned_data.get("floors") or {}
        if not isinstance(floors, dict):
            raise forms.ValidationError("Write a JSON object of metric names and floors.")
        return floors


class JudgeForm(forms.Form):
    """A new judge version: its prompt and the model route that grades."""

    template = forms.CharField(widget=forms.Textarea(attrs={"rows": 10}), max_length=8000)
    model = forms.CharField(max_length=100)
    endpoint = forms.CharField(max_length=64, initial="default")
    note = forms.CharField(max_length=500, required=False)
