"""The project's own pages: the landing redirect, login and logout, API tokens.

The configuration, prompt and release pages are the releases app's; the audit pages the
audit app's.
"""

from __future__ import annotations

from typing import Any, cast

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.db import transaction
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
)
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from agentdesk.models import (
    ApiToken,
)
from agentdesk.tokens import TokenRefused, api_token_revoke, api_tokens_of
from audit.log import audit_record
from audit.models import AuditVerb
from reviews import selectors as review_selectors


class AuditedLoginView(auth_views.LoginView):
    """Django's login, with the login written to the audit log in the same transaction."""

    def form_valid(self, form: Any) -> HttpResponse:
        with transaction.atomic():
            response = super().form_valid(form)
            audit_record(
                actor=form.get_user(),
                verb=AuditVerb.USER_LOGGED_IN,
                object_type="user",
                object_id=str(form.get_user().pk),
            )
        return response


class AuditedLogoutView(auth_views.LogoutView):
    """Django's logout (POST only), written to the audit log first."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = request.user
        with transaction.atomic():
            if user.is_authenticated:
                audit_record(
                    actor=user,
                    verb=AuditVerb.USER_LOGGED_OUT,
                    object_type="user",
                    object_id=str(user.pk),
                )
            return super().post(request, *args, **kwargs)


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Reviewers land in their inbox; everyone else on the runs list."""
    if review_selectors.queue_ids_decidable(user=request.user):
        return redirect("reviews:inbox")
    return redirect("runs:list")


# --- API tokens: each person's own -------------------------------------------------------------


@login_required
def token_list(request: HttpRequest) -> HttpResponse:
    """The logged-in person's API tokens (never their keys), with a revoke button each."""
    now = timezone.now()
    tokens = [(token, token.status(now)) for token in api_tokens_of(user=cast(User, request.user))]
    return render(request, "tokens/list.html", {"tokens": tokens})


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """Revoke one of one's own tokens; another person's is a 404, and nothing changes."""
    user = cast(User, request.user)
    try:
        token = api_token_revoke(token_id=token_id, actor=user, owner=user)
    except ApiToken.DoesNotExist:
        raise Http404 from None
    except TokenRefused as exc:
        messages.info(request, str(exc))
    else:
        messages.success(request, f"Revoked {token.name} ({token.prefix}…): it no longer works.")
    return redirect("tokens:list")


def admin_view_on_site(
    request: HttpRequest, content_type_id: str, object_id: str
) -> HttpResponseBase:
    """The admin's "view on site" redirect, with a 404 for an id its model cannot hold.

    Django's own (``contenttypes.views.shortcut``) lets the ValidationError of a malformed
    UUID (a run's id) escape as a 500.
    """
    from django.contrib.contenttypes.views import shortcut
    from django.core.exceptions import ValidationError

    try:
        return shortcut(request, content_type_id, object_id)
    except (ValidationError, ValueError):
        raise Http404("No object with that id.") from None
