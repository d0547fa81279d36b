"""Forms of the reviewers' pages. They validate; the services decide and save.

The edit form is generated from the tool's pydantic schema (its JSON schema) by
``agentdesk.schema_forms``, the generator the submit page uses for an agent's input, so a
tool added in code gets an edit form without a template change. The form's own checks
(lengths, patterns, choices) give quick messages; the service validates the result with
pydantic again, and its field errors are put back on this form.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from agentdesk import schema_forms
from agentdesk.schema_forms import initial_arguments as initial_arguments  # the views' import
from reviews.models import Queue
from reviews.selectors import EscalationTarget, InboxFilters
from reviews.services.deciding import FEEDBACK_MAX

ARGS_PREFIX = "args"


class DecisionForm(forms.Form):
    """What every approving decision carries: the hash of the arguments the reviewer saw."""

    args_hash = forms.CharField(widget=forms.HiddenInput, max_length=64)
    note = forms.CharField(
        label="Note (optional)",
        required=False,
        max_length=FEEDBACK_MAX,
        widget=forms.TextInput(attrs={"placeholder": "why, for the record"}),
    )


class RejectForm(forms.Form):
    feedback = forms.CharField(
        label="Feedback for the agent",
        max_length=FEEDBACK_MAX,
        widget=forms.Textarea(
            attrs={"rows": 3, "placeholder": "What is wrong and what to do instead"}
        ),
        help_text="Returned to the agent as the tool's result, so it can adapt.",
    )

    def clean_feedback(self) -> str:
        feedback = str(self.cleaned_data["feedback"]).strip()
        if not feedback:
            raise forms.ValidationError("This field is required.")
        return feedback


class EscalateForm(forms.Form):
    to_queue = forms.ModelChoiceField(queryset=Queue.objects.none(), label="Send to")
    reason = forms.CharField(
        label="Why",
        max_length=FEEDBACK_MAX,
        widget=forms.TextInput(attrs={"placeholder": "e.g. the amount needs a senior"}),
    )

    def __init__(self, *args: Any, targets: list[EscalationTarget], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["to_queue"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = Queue.objects.filter(pk__in=[target.queue.pk for target in targets])
        field.empty_label = None
        # The configured target first, as escalation_targets sorted them.
        field.choices = [(target.queue.pk, target.label) for target in targets]


class BulkApproveForm(forms.Form):
    ids = forms.TypedMultipleChoiceField(coerce=int, choices=(), label="Requests")

    def __init__(self, data: Any = None, **kwargs: Any) -> None:
        super().__init__(data, **kwargs)
        raw = data.getlist("ids") if data is not None else []
        field = self.fields["ids"]
        assert isinstance(field, forms.TypedMultipleChoiceField)
        field.choices = [(value, value) for value in raw if str(value).isdigit()]
        field.error_messages["required"] = "Select at least one request."
        self._data = data

    def seen_hashes(self) -> dict[int, str]:
        """The hash each selected row showed, posted as ``hash_<id>``."""
        ids: list[int] = self.cleaned_data["ids"]
        return {pk: str(self._data.get(f"hash_{pk}", ""))[:64] for pk in ids}


# --- the edit form, generated from a JSON schema ------------------------------------------


class SchemaForm(schema_forms.SchemaForm):
    """A tool's arguments in the edit form (agentdesk.schema_forms), named ``args-<name>``.

    The prefix keeps the arguments apart from the decision's own fields (the hash, the note)
    posted in the same form.
    """

    prefix = ARGS_PREFIX


# --- the inbox's filters --------------------------------------------------------------------

# Ten years in minutes: older than any request, small enough for a timedelta.
AGE_MAX_MINUTES = 10 * 366 * 24 * 60


class InboxFilterForm(forms.Form):
    """The inbox's query string (``?queue=3&tool=issue_refund&age=60``), all optional.

    An agent or tool that matches nothing is a valid filter with no rows; a NUL character,
    a number out of range or an over-long value is an error (agentdesk.query).
    """

    queue = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    agent = forms.CharField(required=False, max_length=64)
    tool = forms.CharField(required=False, max_length=100)
    risk = forms.CharField(required=False, max_length=16)
    age = forms.IntegerField(required=False, min_value=1, max_value=AGE_MAX_MINUTES)
    page = forms.CharField(required=False, max_length=20)  # the paginator reads it

    def filters(self) -> InboxFilters:
        data = self.cleaned_data
        return InboxFilters(
            queue=data["queue"],
            agent=data["agent"],
            tool=data["tool"],
            risk=data["risk"],
            older_than=data["age"],
        )


# --- queue membership ----------------------------------------------------------------------


class MemberForm(forms.Form):
    """Grant or revoke view/decide on a queue, to a user or a group."""

    principal = forms.CharField(
        label="User or group",
        max_length=150,
        help_text='A username, or "group:<name>" for a role group.',
    )
    level = forms.ChoiceField(choices=[("view", "View"), ("decide", "View and decide")])
    action = forms.ChoiceField(
        choices=[("grant", "Grant"), ("revoke", "Revoke")], widget=forms.HiddenInput
    )

    def clean_principal(self) -> Any:
        name = str(self.cleaned_data["principal"]).strip()
        if name.startswith("group:"):
            group = Group.objects.filter(name=name.removeprefix("group:")).first()
            if group is None:
                raise forms.ValidationError("No group has that name.")
            return group
        user = get_user_model().objects.filter(username=name, is_active=True).first()
        if user is None:
            raise forms.ValidationError("No active user has that username.")
        return user
