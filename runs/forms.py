from __future__ import annotations

from typing import Any

from django import forms

from agents.registry import agents
from examples.support.services import ticket_file


class SupportTicketForm(forms.Form):
    """A ticket for the example support agent, written by hand or picked from the seeds."""

    agent = forms.ChoiceField(choices=())
    customer_email = forms.EmailField(max_length=254)
    subject = forms.CharField(max_length=200)
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 8}), max_length=5000)
    ticket_id = forms.RegexField(
        regex=r"^T-[0-9]{4}$",
        required=False,
        help_text="Filled in when you pick a demo ticket; left empty, a new ticket is filed.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        agent_field = self.fields["agent"]
        assert isinstance(agent_field, forms.ChoiceField)
        agent_field.choices = [(name, name) for name in sorted(agents())]

    def run_input(self) -> dict[str, Any]:
        data = self.cleaned_data
        run_input = {
            "customer_email": data["customer_email"],
            "subject": data["subject"],
            "body": data["body"],
        }
        ticket_id = data.get("ticket_id") or ticket_file(**run_input).ticket_id
        return {"ticket_id": ticket_id, **run_input}


class TicketPickForm(forms.Form):
    """``?ticket=T-0007`` on the submit page: a demo ticket to prefill the form with."""

    ticket = forms.RegexField(regex=r"^T-[0-9]{4}$", required=False)
