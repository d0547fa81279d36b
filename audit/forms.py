"""The audit search form: filters, never saving."""

from __future__ import annotations

from django import forms

from audit.selectors import AuditFilters

_DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"]


class AuditSearchForm(forms.Form):
    actor = forms.CharField(required=False, max_length=150, label="Actor (username)")
    object_type = forms.CharField(required=False, max_length=64, label="Object type")
    object_id = forms.CharField(required=False, max_length=64, label="Object id")
    verb = forms.CharField(required=False, max_length=64, label="Verb starts with")
    since = forms.DateTimeField(
        required=False,
        input_formats=_DATETIME_FORMATS,
        label="From (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    until = forms.DateTimeField(
        required=False,
        input_formats=_DATETIME_FORMATS,
        label="Until (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    trace_id = forms.CharField(required=False, max_length=32, label="Trace id")

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if since and until and since >= until:
            self.add_error("until", "The end of the range must come after its start.")
        return data

    def filters(self) -> AuditFilters:
        """The validated filters; call after is_valid(). Invalid fields count as unset."""
        data = self.cleaned_data
        return AuditFilters(
            actor=(data.get("actor") or "").strip(),
            object_type=(data.get("object_type") or "").strip(),
            object_id=(data.get("object_id") or "").strip(),
            verb=(data.get("verb") or "").strip(),
            since=data.get("since"),
            until=data.get("until"),
            trace_id=(data.get("trace_id") or "").strip(),
        )


# --- agent configuration, for operators ------------------------------------------------------
