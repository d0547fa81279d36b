"""The submit page's forms: built from the agent's declared input schema, never saving.

The form is ``agentdesk.schema_forms``' generator (the inbox's edit form is the same one)
over ``agent.input_schema``, after a field naming the agent. Its checks give quick field
messages; the submit service validates the input with pydantic again, and its field errors
are put back on the form.
"""

from __future__ import annotations

from typing import Any

from django import forms

from agentdesk.schema_forms import SchemaForm
from agents.definition import Agent
from agents.registry import agents

AGENT_FIELD = "agent"


def _agent_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in agents()]


class RunSubmitForm(SchemaForm):
    """The agent (a hidden field: the page switches agents by link), then its input."""

    def __init__(self, data: Any = None, *, agent: Agent, **kwargs: Any) -> None:
        choice = forms.ChoiceField(choices=_agent_choices(), widget=forms.HiddenInput)
        kwargs["initial"] = {AGENT_FIELD: agent.name, **kwargs.get("initial", {})}
        super().__init__(
            data,
            schema=agent.input_schema.model_json_schema(),
            fields_before={AGENT_FIELD: choice},
            **kwargs,
        )


class SubmitPickForm(forms.Form):
    """The submit page's address: ``?agent=support&demo=T-0007``, both optional.

    ``agent``: whose form to show (the first registered agent without one); ``demo``: one
    of its demo inputs to fill the form with (none if no demo input has that key).
    """

    agent = forms.ChoiceField(choices=(), required=False)
    demo = forms.RegexField(regex=r"^[A-Za-z0-9_.:-]{1,64}$", required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["agent"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = _agent_choices()
