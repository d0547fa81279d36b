"""Forms of the configuration, prompt and release pages. Never saving."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings

from agents.definition import OnLimit, Risk
from policy.engine import (
    DEFAULT_SUMS_WINDOW_HOURS,
    FOREIGN_BLOCK,
    FOREIGN_REVIEW,
    SUMS_WINDOW_MAX_HOURS,
)
from releases.config_documents import LIMIT_FIELDS, SLA_MINUTES_MAX, ConfigRefused
from releases.configuration import routes_text

_DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"]


def parse_tier(text: str) -> list[dict[str, str]]:
    """``gpt-4o@default, gpt-4o-mini@backup`` as a tier's JSON; ValidationError if malformed.

    Strict: every entry is ``model@endpoint`` (the endpoint after the last ``@``, so a
    model name may hold one), none empty. Whether the endpoints exist is the service's
    check, with the configured aliases in its message.
    """
    routes = []
    for entry in text.split(","):
        model, at, endpoint = entry.strip().rpartition("@")
        if not at or not model or not endpoint:
            raise forms.ValidationError(
                f"{entry.strip() or '(empty)'!r} is not model@endpoint; write the models in "
                "order, separated by commas, such as gpt-4o@default, gpt-4o-mini@default."
            )
        routes.append({"model": model, "endpoint": endpoint})
    return routes


class ConfigForm(forms.Form):
    """A new configuration version: policy, limits, model tiers, escalation and SLA.

    Per tool: whether it is in scope, the confidence below which a call waits for a person
    (blank: none) and its queue (blank: the default queue). Checking every tool stores no
    scope restriction (tools a later deploy adds are in scope too). Per task kind: its
    models in order, the first the primary. The service validates the whole configuration
    again; this form only checks each field's type, range and syntax.
    """

    note = forms.CharField(
        max_length=500, label="What changes and why", widget=forms.TextInput(attrs={"size": 60})
    )
    scope = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Tools in scope"
    )
    review_risks = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        choices=[(risk.value, risk.value) for risk in Risk],
        label="Always reviewed risk classes",
    )
    queue = forms.SlugField(max_length=64, label="Default review queue")
    escalation_queue = forms.SlugField(
        max_length=64,
        label="Escalation queue",
        help_text="Where a run that cannot go on by itself waits for a person.",
    )
    sla_minutes = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=SLA_MINUTES_MAX,
        label="Due after (minutes)",
        help_text="How long this agent's requests may wait in their first queue; blank: "
        "the queue's own SLA.",
    )
    on_foreign_subject = forms.ChoiceField(
        choices=[
            (FOREIGN_BLOCK, "block the call"),
            (FOREIGN_REVIEW, "send it to review, flagged"),
        ],
        label="A call reaching another subject's records",
        help_text="Another customer's order or ticket, whatever the model's confidence.",
    )
    sums_window_hours = forms.IntegerField(
        min_value=1,
        max_value=SUMS_WINDOW_MAX_HOURS,
        label="Sums window (hours)",
        help_text="How far back rules' sums over a customer and a record reach.",
    )
    max_steps = forms.IntegerField(min_value=1, label="Steps")
    max_tool_calls = forms.IntegerField(min_value=1, label="Tool calls")
    max_tokens = forms.IntegerField(min_value=1, label="Tokens")
    max_cost_usd = forms.DecimalField(
        min_value=Decimal("0.000001"), max_digits=16, decimal_places=6, label="Cost (USD)"
    )
    deadline_s = forms.IntegerField(min_value=1, label="Deadline (seconds)")
    on_exceeded = forms.ChoiceField(
        choices=[(OnLimit.FAIL.value, "fail the run"), (OnLimit.ESCALATE.value, "ask a person")],
        label="When a limit is reached",
    )

    LIMIT_FIELDS = LIMIT_FIELDS  # the document's, in its order

    def __init__(self, *args: Any, tools: list[str], kinds: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tools = tools
        self.kinds = kinds
        # Alias names only: the URL and key behind each stay in the environment.
        self.endpoints = sorted(settings.AGENTDESK_LLM_ENDPOINTS)
        scope_field = self.fields["scope"]
        assert isinstance(scope_field, forms.MultipleChoiceField)
        scope_field.choices = [(tool, tool) for tool in tools]
        for tool in tools:
            self.fields[f"threshold__{tool}"] = forms.FloatField(
                required=False, min_value=0, max_value=1, label=f"{tool} threshold"
            )
            self.fields[f"queue__{tool}"] = forms.SlugField(
                required=False, max_length=64, label=f"{tool} queue"
            )
        for kind in kinds:
            self.fields[f"tier__{kind}"] = forms.CharField(
                max_length=1000,
                label=f"{kind} models",
                widget=forms.TextInput(attrs={"size": 50}),
            )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for kind in self.kinds:
            name = f"tier__{kind}"
            if data.get(name):
                try:
                    data[name] = parse_tier(data[name])
                except forms.ValidationError as exc:
                    self.add_error(name, exc)
        return data

    def tool_rows(self) -> list[tuple[str, bool, forms.BoundField, forms.BoundField]]:
        """Per tool, for the table: name, in scope, its threshold and queue fields."""
        selected = set(self["scope"].value() or [])
        return [
            (tool, tool in selected, self[f"threshold__{tool}"], self[f"queue__{tool}"])
            for tool in self.tools
        ]

    def tier_rows(self) -> list[tuple[str, forms.BoundField]]:
        return [(kind, self[f"tier__{kind}"]) for kind in self.kinds]

    def limit_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.LIMIT_FIELDS]

    @staticmethod
    def initial_from(
        config: dict[str, Any], tools: list[str], kinds: list[str], note: str = ""
    ) -> dict[str, Any]:
        """The form's initial values from a version's effective configuration."""
        initial: dict[str, Any] = {
            "note": note,
            "scope": tools if config.get("scope") is None else config["scope"],
            "review_risks": config.get("review_risks", []),
            "queue": config.get("queue", ""),
            "escalation_queue": config["escalation_queue"],
            "sla_minutes": config["sla_minutes"],
            "on_foreign_subject": config.get("on_foreign_subject", FOREIGN_BLOCK),
            "sums_window_hours": config.get("sums_window_hours", DEFAULT_SUMS_WINDOW_HOURS),
            **config["limits"],
        }
        for tool in tools:
            initial[f"threshold__{tool}"] = config.get("thresholds", {}).get(tool)
            initial[f"queue__{tool}"] = config.get("tool_queues", {}).get(tool, "")
        for kind in kinds:
            initial[f"tier__{kind}"] = routes_text(config["model_tiers"].get(kind, []))
        return initial

    def config(self, rules: list[dict[str, Any]]) -> dict[str, Any]:
        """The configuration JSON; call after is_valid().

        On an invalid form, of the valid fields only: a field with an error of its own is
        left out, so the service's check of the rest (rules, endpoints, queues) can be
        shown in the same round.
        """
        data = self.cleaned_data
        config: dict[str, Any] = {"rules": rules}
        if "scope" in data:
            scope = [tool for tool in self.tools if tool in data["scope"]]
            config["scope"] = None if len(scope) == len(self.tools) else scope
        if "review_risks" in data:
            config["review_risks"] = sorted(data["review_risks"])
        config["thresholds"] = {
            tool: data[f"threshold__{tool}"]
            for tool in self.tools
            if data.get(f"threshold__{tool}") is not None
        }
        config["tool_queues"] = {
            tool: data[f"queue__{tool}"] for tool in self.tools if data.get(f"queue__{tool}")
        }
        for name in SCALAR_FIELDS:
            if name in data:
                config[name] = data[name]
        limits = {name: data[name] for name in self.LIMIT_FIELDS if name in data}
        if "max_cost_usd" in limits:
            limits["max_cost_usd"] = str(limits["max_cost_usd"])
        config["limits"] = limits
        config["model_tiers"] = {
            kind: data[f"tier__{kind}"] for kind in self.kinds if f"tier__{kind}" in data
        }
        return config

    # --- the service's refusal, shown at its fields -------------------------------------------

    def _field_of(self, location: str, rule_forms: list[RuleForm]) -> tuple[forms.Form, str | None]:
        """The form and field a document location is edited in (None: the form as a whole)."""
        rule = _RULE_LOCATION.match(location)
        if rule:
            index, field = int(rule["index"]) - 1, rule["field"]
            if 0 <= index < len(rule_forms):
                form = rule_forms[index]
                return form, field if field in form.fields else None
            return self, None
        head, _, rest = location.partition(".")
        key = re.split(r"[.\[]", rest, maxsplit=1)[0]
        name = {
            "thresholds": f"threshold__{key}",
            "tool_queues": f"queue__{key}",
            "model_tiers": f"tier__{key}",
            "limits": key,
        }.get(head, head if not rest else "")
        return self, name if name in self.fields else None

    def show_refusal(self, refused: ConfigRefused, rule_forms: list[RuleForm]) -> None:
        """Put each of the service's errors next to the field it is about.

        A field that already has an error of its own was left out of what the service
        checked (``config``), so what the service says about it is skipped.
        """
        flagged = {(id(form), name) for form in [self, *rule_forms] for name in form.errors if name}
        for error in refused.errors:
            form, field = self._field_of(error.location, rule_forms)
            if field is None or (id(form), field) not in flagged:
                form.add_error(field, str(error))

    def error_summary(
        self, formset: forms.BaseFormSet, rule_forms: list[RuleForm]
    ) -> list[tuple[str, str]]:
        """Every error on the page, each as (the id of its field or "", text naming it)."""

        def named(location: str, error: str) -> str:
            # The service's errors name their field already (model_tiers.decision[1]...).
            if error.startswith(location) and error[len(location) : len(location) + 1] in ":.[":
                return error
            return f"{location}: {error}"

        items = [("", str(error)) for error in self.non_field_errors()]
        for field in self:
            location = _location_of(field.name)
            items += [(field.id_for_label or "", named(location, str(e))) for e in field.errors]
        items += [("", named("rules", str(error))) for error in formset.non_form_errors()]
        for number, form in enumerate(rule_forms, start=1):
            where = f"rules[{number}]"
            items += [("", named(where, str(e))) for e in form.non_field_errors()]
            for field in form:
                items += [
                    (field.id_for_label or "", named(f"{where}.{field.name}", str(e)))
                    for e in field.errors
                ]
        return items


# The form's fields that are the document's own top-level fields, as they are.
SCALAR_FIELDS = (
    "queue",
    "on_foreign_subject",
    "sums_window_hours",
    "escalation_queue",
    "sla_minutes",
)
_RULE_LOCATION = re.compile(r"rules\[(?P<index>\d+)\](?:\.(?P<field>\w+))?")


def _location_of(name: str) -> str:
    """The document location a ConfigForm field edits: threshold__x is thresholds.x."""
    prefix, _, key = name.partition("__")
    if key:
        return {"threshold": "thresholds", "queue": "tool_queues", "tier": "model_tiers"}[
            prefix
        ] + f".{key}"
    return f"limits.{name}" if name in ConfigForm.LIMIT_FIELDS else name


class RuleForm(forms.Form):
    """One review rule: a CEL expression that sends matching calls to a queue."""

    name = forms.SlugField(max_length=64, label="Name")
    when = forms.CharField(
        max_length=1000,
        label="When (CEL)",
        widget=forms.TextInput(attrs={"size": 34, "placeholder": "args.amount > 100"}),
    )
    tools = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Tools (none: every tool)"
    )
    queue = forms.SlugField(required=False, max_length=64, label="Queue")
    approvals = forms.IntegerField(min_value=1, max_value=10, initial=1, label="Approvals")
    description = forms.CharField(required=False, max_length=300, label="Description")

    def __init__(self, *args: Any, tools: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tools_field = self.fields["tools"]
        assert isinstance(tools_field, forms.MultipleChoiceField)
        tools_field.choices = [(tool, tool) for tool in tools]

    def rule(self) -> dict[str, Any]:
        """The rule's JSON; of its valid fields only when the form is invalid."""
        data = self.cleaned_data
        rule: dict[str, Any] = {key: data[key] for key in ("name", "when") if key in data}
        if "tools" in data:
            rule["tools"] = list(data["tools"])
        if "queue" in data:
            rule["queue"] = data["queue"] or None
        rule |= {key: data[key] for key in ("approvals", "description") if key in data}
        return rule


RuleFormSet = forms.formset_factory(RuleForm, extra=1, can_delete=True)


def rule_forms_kept(formset: Any) -> list[RuleForm]:
    """The formset's rules, in order, without deleted and untouched blank rows."""
    return [
        form
        for form in formset.forms
        if form.has_changed() and not (formset.can_delete and formset._should_delete_form(form))
    ]


def rules_from(formset: Any) -> list[dict[str, Any]]:
    """The rules of a formset (``rules[n]`` is the n-th of ``rule_forms_kept``)."""
    return [form.rule() for form in rule_forms_kept(formset)]


# --- prompt versions, for operators ------------------------------------------------------------


class PromptVersionForm(forms.Form):
    """A new prompt version's text and note. The service validates the template itself."""

    # strip=False: the service canonicalises line ends and the final newline; stripping
    # here as well would hide what was posted from its error messages.
    template = forms.CharField(
        strip=False,
        required=False,  # the service's "The prompt is empty." is the clearer message
        label="Prompt template",
        widget=forms.Textarea(attrs={"rows": 28, "spellcheck": "true", "class": "prompt-text"}),
    )
    note = forms.CharField(
        max_length=500, label="What changes and why", widget=forms.TextInput(attrs={"size": 60})
    )


class LabelMoveForm(forms.Form):
    """Which label to move to which release, and the release it held when the person
    looked (``expected_current``); the service checks the rest."""

    label = forms.CharField(max_length=32)
    number = forms.IntegerField(min_value=1)
    expected_current = forms.IntegerField(min_value=1, required=False)
    # Only read when the promotion gate refuses: a holder of the override permission moves
    # the release anyway, and this reason goes into the audit log.
    override_reason = forms.CharField(max_length=1000, required=False)


class TryPromptForm(forms.Form):
    """Point dev at a prompt version, with dev's configuration."""

    number = forms.IntegerField(min_value=1)


class ReleaseForm(forms.Form):
    """A release of two existing versions; the service checks they exist."""

    prompt_number = forms.IntegerField(min_value=1, label="Prompt version")
    config_number = forms.IntegerField(min_value=1, label="Configuration version")
    note = forms.CharField(max_length=500, required=False, label="Note")


class ActivateForm(forms.Form):
    """The confirmation step of an activation: the operator saw the diff against this one.

    ``expected_active`` is the version that was active on the confirmation page; if
    another has been activated since, the activation is refused and shown again.
    """

    confirm = forms.BooleanField(required=True, widget=forms.HiddenInput)
    expected_active = forms.IntegerField(min_value=1, widget=forms.HiddenInput)
    # The production release on the confirmation page: its prompt is what the activated
    # configuration will be paired with.
    expected_release = forms.IntegerField(min_value=1, required=False, widget=forms.HiddenInput)
    # Read only when the promotion gate refuses and the user may override it (audited).
    override_reason = forms.CharField(
        max_length=1000,
        required=False,
        label="If the gate refuses: override it, for this reason",
        widget=forms.Textarea(attrs={"rows": 2}),
    )
