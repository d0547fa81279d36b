"""The Django admin of the approval queue, for superusers and staff with model permissions.

- Queues: their SLA settings, and who may see and decide in each (django-guardian's object
  permission pages, limited to ``view_queue`` and ``decide_queue``, open to holders of
  ``manage_queue_access`` only, and written through reviews.access so that deciding
  implies seeing, nobody grants themselves, and every grant and refusal is audited).
- Requests and decisions: read only. Decisions are taken through the product's services
  (the inbox), which lock, check hashes, resume runs and audit; an admin form would skip
  all of that.
- Golden candidates: a list whose status can be changed; everything else is read only.

Every change made here writes its audit event in the same transaction.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Model, QuerySet
from django.forms.models import model_to_dict
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from guardian.admin import (
    AdminGroupObjectPermissionsForm,
    AdminUserObjectPermissionsForm,
    ReinforcedGuardedModelAdmin,
)

from audit.log import audit_record
from audit.models import AuditVerb
from reviews.access import (
    MANAGE_ACCESS,
    grant_refusal,
    permissions_held,
    queue_permission_refused,
    queue_permission_set,
)
from reviews.models import ApprovalRequest, Decision, GoldenCandidate, Queue

QUEUE_PERMISSIONS = ("view_queue", "decide_queue")
QUEUE_FIELDS = (
    "slug",
    "name",
    "description",
    "sla_minutes",
    "remind_minutes",
    "escalate_to",
    "expiry_outcome",
    "tier",
    "submitter_may_decide",
)


# --- queues ----------------------------------------------------------------------------------


class QueueForm(forms.ModelForm):
    class Meta:
        model = Queue
        fields = QUEUE_FIELDS

    def clean_escalate_to(self) -> Queue | None:
        """Refuse an escalation chain that comes back to this queue.

        A request in a loop would move from queue to queue forever and never take an
        expiry outcome. The database refuses only the one-step loop (a queue escalating
        to itself).
        """
        target: Queue | None = self.cleaned_data.get("escalate_to")
        seen: set[int] = set()
        step = target
        while step is not None and step.pk not in seen:
            if self.instance.pk is not None and step.pk == self.instance.pk:
                raise ValidationError(
                    "This would make an escalation loop: %(chain)s comes back here.",
                    params={"chain": target.name if target else ""},
                )
            seen.add(step.pk)
            step = step.escalate_to
        return target

    def clean(self) -> dict[str, Any]:
        """Refuse an escalation to a queue of a lower tier: authority never goes down."""
        data = super().clean() or {}
        target: Queue | None = data.get("escalate_to")
        tier = data.get("tier", self.instance.tier)  # read-only for all but access admins
        if target is not None and tier is not None and target.tier < tier:
            self.add_error(
                "escalate_to",
                ValidationError(
                    "%(target)s is tier %(low)s, below this queue's tier %(tier)s: a request "
                    "never escalates to less authority.",
                    params={"target": target.name, "low": target.tier, "tier": tier},
                ),
            )
        return data


class _QueuePermissionsForm:
    """Offers the two queue permissions only, and saves them through reviews.access."""

    actor: User
    obj: Any
    cleaned_data: dict[str, Any]

    def get_obj_perms_field_choices(self) -> list[tuple[str, str]]:
        choices: list[tuple[str, str]] = super().get_obj_perms_field_choices()  # type: ignore[misc]
        return [(codename, name) for codename, name in choices if codename in QUEUE_PERMISSIONS]

    def principal(self) -> Any:
        raise NotImplementedError

    def clean(self) -> dict[str, Any]:
        """Refuse a grant to oneself (or one's group) before guardian's view saves anything.

        The refusal is recorded here because guardian's view offers no later hook that can
        still show the form's error; nothing else is written.
        """
        cleaned: dict[str, Any] = super().clean()  # type: ignore[misc]
        selected = set(cleaned.get(self.get_obj_perms_field_name(), []))  # type: ignore[attr-defined]
        principal = self.principal()
        added = selected - permissions_held(principal, self.obj)
        if added:
            refusal = grant_refusal(actor=self.actor, principal=principal, granted=True)
            if refusal is not None:
                queue_permission_refused(
                    actor=self.actor,
                    queue=self.obj,
                    asked_for=str(principal),
                    permission=f"grant {', '.join(sorted(added))}",
                    reason=refusal.message,
                )
                raise ValidationError(refusal.message)
        return cleaned

    def save_obj_perms(self) -> None:
        selected = set(self.cleaned_data[self.get_obj_perms_field_name()])  # type: ignore[attr-defined]
        with transaction.atomic():
            if "decide_queue" in selected:
                levels = [("decide", True)]
            else:
                levels = [("decide", False), ("view", "view_queue" in selected)]
            for level, granted in levels:
                queue_permission_set(
                    actor=self.actor,
                    queue=self.obj,
                    principal=self.principal(),
                    level=level,  # type: ignore[arg-type]
                    granted=granted,
                )


class QueueUserPermissionsForm(_QueuePermissionsForm, AdminUserObjectPermissionsForm):
    def principal(self) -> Any:
        return self.user


class QueueGroupPermissionsForm(_QueuePermissionsForm, AdminGroupObjectPermissionsForm):
    def principal(self) -> Any:
        return self.group


def _with_actor(form: type[forms.Form], request: HttpRequest) -> type[forms.Form]:
    return type(form.__name__, (form,), {"actor": request.user})


def _audited_fields(obj: Model, fields: tuple[str, ...]) -> dict[str, Any]:
    values = model_to_dict(obj, fields=fields)
    return {name: values.get(name) for name in fields}


def _number_or_404(value: str) -> str:
    """An id from the address; guardian passes it straight to a query, a 500 if not a number."""
    if not (value.isascii() and value.isdigit()):
        raise Http404(f"{value[:40]!r} is not an id")
    return value


@admin.register(Queue)
class QueueAdmin(ReinforcedGuardedModelAdmin):
    """Queues, with guardian's per-object permission pages ("Object permissions").

    The reinforced variant: managing who may decide needs guardian's own permissions on
    user and group object permissions (superusers hold them), not just the right to
    change a queue's settings.
    """

    form = QueueForm
    list_display = (
        "name",
        "slug",
        "sla_minutes",
        "remind_minutes",
        "escalate_to",
        "expiry_outcome",
    )
    list_select_related = ("escalate_to",)
    search_fields = ("name", "slug")
    fields = QUEUE_FIELDS

    # Who may decide is an admin's right (reviews.access): guardian's own permissions
    # and manage_queue_access, both. guardian's pages take their ids as text from the
    # address (``<object_pk>``, ``<user_id>``, ``<group_id>``): a 404 for one that is not
    # a number, as the admin's own change page and every ``<int:...>`` route give.
    def obj_perms_manage_view(self, request: HttpRequest, object_pk: str) -> HttpResponse:
        return super().obj_perms_manage_view(request, _number_or_404(object_pk))

    def obj_perms_manage_user_view(
        self, request: HttpRequest, object_pk: str, user_id: str
    ) -> HttpResponse:
        if not request.user.has_perm(MANAGE_ACCESS):
            return redirect(reverse("admin:index", current_app=self.admin_site.name))
        return super().obj_perms_manage_user_view(
            request, _number_or_404(object_pk), _number_or_404(user_id)
        )

    def obj_perms_manage_group_view(
        self, request: HttpRequest, object_pk: str, group_id: str
    ) -> HttpResponse:
        if not request.user.has_perm(MANAGE_ACCESS):
            return redirect(reverse("admin:index", current_app=self.admin_site.name))
        return super().obj_perms_manage_group_view(
            request, _number_or_404(object_pk), _number_or_404(group_id)
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # Letting submitters decide loosens separation of duties, and a queue's tier is the
        # authority its reviewers hold (raising one would let its reviewers take a senior's
        # requests): both are an access admin's call.
        if request.user.has_perm(MANAGE_ACCESS):
            return ()
        return ("submitter_may_decide", "tier")

    def get_obj_perms_manage_user_form(self, request: HttpRequest) -> type[forms.Form]:
        return _with_actor(QueueUserPermissionsForm, request)

    def get_obj_perms_manage_group_form(self, request: HttpRequest) -> type[forms.Form]:
        return _with_actor(QueueGroupPermissionsForm, request)

    def save_model(self, request: HttpRequest, obj: Queue, form: Any, change: bool) -> None:
        with transaction.atomic():
            before = (
                _audited_fields(Queue.objects.select_for_update().get(pk=obj.pk), QUEUE_FIELDS)
                if change and obj.pk
                else None
            )
            super().save_model(request, obj, form, change)
            audit_record(
                actor=request.user,
                verb=AuditVerb.QUEUE_CHANGED if change else AuditVerb.QUEUE_CREATED,
                object_type="queue",
                object_id=str(obj.pk),
                before=before,
                after=_audited_fields(obj, QUEUE_FIELDS),
            )

    def delete_model(self, request: HttpRequest, obj: Queue) -> None:
        with transaction.atomic():
            audit_record(
                actor=request.user,
                verb=AuditVerb.QUEUE_DELETED,
                object_type="queue",
                object_id=str(obj.pk),
                before=_audited_fields(obj, QUEUE_FIELDS),
            )
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Queue]) -> None:
        with transaction.atomic():
            for queue in queryset:
                self.delete_model(request, queue)


# --- requests and decisions: read only -------------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    """Look, never touch: these records change through the services only."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DecisionInline(admin.TabularInline):
    model = Decision
    fields = ("created_at", "kind", "decided_by", "args_hash", "reason", "from_queue", "to_queue")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "tool",
        "agent_name",
        "queue",
        "state",
        "outcome",
        "risk",
        "due_at",
        "reminded_at",
        "created_at",
    )
    list_filter = ("state", "risk", "queue")
    list_select_related = ("queue",)
    search_fields = ("tool", "agent_name", "=run__id")
    date_hierarchy = "created_at"
    # Counting every request for "x of y" costs a full scan at a hundred thousand rows.
    show_full_result_count = False
    inlines = (DecisionInline,)


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdmin):
    list_display = ("id", "request", "kind", "decided_by", "from_queue", "to_queue", "created_at")
    list_filter = ("kind",)
    list_select_related = ("request", "decided_by", "from_queue", "to_queue")
    show_full_result_count = False


# --- golden candidates: the status only -------------------------------------------------------


@admin.register(GoldenCandidate)
class GoldenCandidateAdmin(admin.ModelAdmin):
    list_display = ("id", "agent_name", "correction_kind", "status", "created_at", "run")
    list_editable = ("status",)
    list_filter = ("status", "agent_name")
    list_select_related = ("run",)
    fields = (
        "status",
        "agent_name",
        "run",
        "request",
        "decision",
        "input",
        "proposal",
        "correction",
        "reason",
        "created_at",
    )
    readonly_fields = fields[1:]

    @admin.display(description="correction")
    def correction_kind(self, obj: GoldenCandidate) -> str:
        return str(obj.correction.get("kind", ""))

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: GoldenCandidate, form: Any, change: bool
    ) -> None:
        with transaction.atomic():
            before = (
                GoldenCandidate.objects.select_for_update()
                .values_list("status", flat=True)
                .get(pk=obj.pk)
            )
            super().save_model(request, obj, form, change)
            if before != obj.status:
                audit_record(
                    actor=request.user,
                    verb=AuditVerb.CANDIDATE_STATUS_CHANGED,
                    object_type="golden_candidate",
                    object_id=str(obj.pk),
                    before={"status": before},
                    after={"status": obj.status},
                )
