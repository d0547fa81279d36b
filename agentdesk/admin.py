"""Users and groups in the Django admin, with every change of access audited.

Who may do what is a group (a role: agentdesk.roles), a model permission, or the staff and
superuser flags; queue-level access is audited by reviews.admin. Django's own UserAdmin
and GroupAdmin change these without a trace, so they are replaced here by subclasses that
write one audit event per change (``user.created``, ``user.access_changed``,
``user.deleted``, ``group.created``, ``group.permissions_changed``, ``group.deleted``)
with the access before and after. The admin runs each change form in a transaction, and
the event is written inside it, once the many-to-many fields are saved.

A change that leaves access as it was (a new email address) writes nothing: the log is
for who may do what. Passwords are not part of it.

Nobody changes their own access here (invariant 14: no one grants themselves the right
to decide): on one's own user page the flags, groups and permissions are read only, and
so are the permissions of a group one belongs to. Another admin changes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, Permission, User
from django.db import transaction
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from agentdesk.models import ApiToken
from agentdesk.tokens import TokenRefused, api_token_revoke
from audit.log import audit_record
from audit.models import AuditVerb

USER_FLAGS = ("is_active", "is_staff", "is_superuser")


def _permission_names(permissions: Any) -> list[str]:
    """Permissions (objects or ids) as sorted "app_label.codename" strings."""
    ids = [p.pk if isinstance(p, Permission) else int(p) for p in permissions]
    return sorted(
        f"{app_label}.{codename}"
        for app_label, codename in Permission.objects.filter(pk__in=ids).values_list(
            "content_type__app_label", "codename"
        )
    )


def _group_names(groups: Any) -> list[str]:
    ids = [g.pk if isinstance(g, Group) else int(g) for g in groups]
    return sorted(Group.objects.filter(pk__in=ids).values_list("name", flat=True))


def user_access(user: User) -> dict[str, Any]:
    """What a user may do, as the audit log records it."""
    return {
        **{flag: getattr(user, flag) for flag in USER_FLAGS},
        "groups": _group_names(user.groups.all()),
        "user_permissions": _permission_names(user.user_permissions.all()),
    }


def _user_access_initial(initial: Mapping[str, Any]) -> dict[str, Any]:
    """The same, from a change form's initial data (the user as the form was opened)."""
    return {
        **{flag: bool(initial.get(flag)) for flag in USER_FLAGS},
        "groups": _group_names(initial.get("groups") or []),
        "user_permissions": _permission_names(initial.get("user_permissions") or []),
    }


class _AuditedDeletes(admin.ModelAdmin):
    """Deleting from the admin (one object or a selection) writes an event per object."""

    def audit_deleted(self, request: HttpRequest, obj: Any) -> None:
        raise NotImplementedError

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        with transaction.atomic():
            self.audit_deleted(request, obj)
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        with transaction.atomic():
            for obj in queryset:
                self.audit_deleted(request, obj)
            super().delete_queryset(request, queryset)


class AuditedUserAdmin(_AuditedDeletes, UserAdmin):
    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is not None and obj.pk == request.user.pk:
            return (*fields, *USER_FLAGS, "groups", "user_permissions")
        return fields

    def save_related(
        self, request: HttpRequest, form: ModelForm, formsets: Any, change: bool
    ) -> None:
        super().save_related(request, form, formsets, change)
        user = form.instance
        after = user_access(user)
        before = _user_access_initial(form.initial) if change else None
        if before == after:
            return
        audit_record(
            actor=request.user,
            verb=AuditVerb.USER_ACCESS_CHANGED if change else AuditVerb.USER_CREATED,
            object_type="user",
            object_id=str(user.pk),
            before=before,
            after={"username": user.get_username(), **after},
        )

    def audit_deleted(self, request: HttpRequest, obj: Any) -> None:
        audit_record(
            actor=request.user,
            verb=AuditVerb.USER_DELETED,
            object_type="user",
            object_id=str(obj.pk),
            before={"username": obj.get_username(), **user_access(obj)},
        )


class AuditedGroupAdmin(_AuditedDeletes, GroupAdmin):
    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is not None and obj.user_set.filter(pk=request.user.pk).exists():
            return (*fields, "permissions")
        return fields

    def save_related(
        self, request: HttpRequest, form: ModelForm, formsets: Any, change: bool
    ) -> None:
        super().save_related(request, form, formsets, change)
        group = form.instance
        after = {"name": group.name, "permissions": _permission_names(group.permissions.all())}
        before = (
            {
                "name": form.initial.get("name", group.name),
                "permissions": _permission_names(form.initial.get("permissions") or []),
            }
            if change
            else None
        )
        if before == after:
            return
        audit_record(
            actor=request.user,
            verb=AuditVerb.GROUP_PERMISSIONS_CHANGED if change else AuditVerb.GROUP_CREATED,
            object_type="group",
            object_id=str(group.pk),
            before=before,
            after=after,
        )

    def audit_deleted(self, request: HttpRequest, obj: Any) -> None:
        audit_record(
            actor=request.user,
            verb=AuditVerb.GROUP_DELETED,
            object_type="group",
            object_id=str(obj.pk),
            before={"name": obj.name, "permissions": _permission_names(obj.permissions.all())},
        )


admin.site.unregister(User)
admin.site.unregister(Group)
admin.site.register(User, AuditedUserAdmin)
admin.site.register(Group, AuditedGroupAdmin)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Every API token, read only, with a revoke action; never added or deleted here.

    Keys are made by ``create_api_token`` (the key is printed once); a token is revoked
    rather than deleted, so which key existed and who ended it stays on record. Revoking
    goes through agentdesk.tokens, which writes the audit event.
    """

    list_display = (
        "name",
        "prefix",
        "user",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "revoked_by",
    )
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "expires_at")
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = (
        "user",
        "name",
        "prefix",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "revoked_by",
    )
    exclude = ("key_hash",)
    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Revoke the selected tokens", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = 0
        for token_id in queryset.filter(revoked_at__isnull=True).values_list("pk", flat=True):
            try:
                api_token_revoke(token_id=token_id, actor=request.user, owner=None)  # type: ignore[arg-type]
            except TokenRefused:  # revoked meanwhile by someone else: already done
                continue
            revoked += 1
        self.message_user(request, f"Revoked {revoked} token(s).")

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        # Revoking is a change of the token: the model permission, held by superusers.
        return bool(request.user.has_perm("agentdesk.change_apitoken"))
