"""API tokens: issue, list, revoke, and authenticate a request's bearer token.

Only a key's SHA-256 is stored: a key is 32 random bytes, so a fast hash is enough (there
is nothing to guess from), and the lookup is by that hash, an index. A token is revoked,
never deleted; it may carry an expiry. Issuing and revoking write their audit event in
the same transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from agentdesk.models import ApiToken
from audit.log import audit_record
from audit.models import AuditVerb

TOKEN_PREFIX = "adk_"


class TokenRefused(Exception):
    """A token change that cannot be made; the message says why, for the person."""


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _stamp(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@transaction.atomic
def api_token_create(
    *, user: User, name: str, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """Create a token and return it with its key; the key is shown once and never stored."""
    if expires_at is not None and expires_at <= timezone.now():
        raise TokenRefused("The expiry must be in the future.")
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=key[:12], key_hash=_digest(key), expires_at=expires_at
    )
    audit_record(
        actor=user,
        verb=AuditVerb.API_TOKEN_CREATED,
        object_type="api_token",
        object_id=str(token.pk),
        after={
            "user": user.get_username(),
            "name": name,
            "prefix": token.prefix,
            "expires_at": _stamp(expires_at),
        },
    )
    return token, key


def api_tokens_of(*, user: User) -> QuerySet[ApiToken]:
    """The user's own tokens, newest first, revoked and expired ones included."""
    return ApiToken.objects.filter(user=user).select_related("revoked_by").order_by("-id")


def api_token_revoke(*, token_id: int, actor: User | None, owner: User | None) -> ApiToken:
    """Revoke a token at once; ``owner``: only if it is theirs (None: any, for admins).

    The row is locked, so two revocations at once end it once and write one event; the
    second is told it was already revoked. ``actor`` None: a management command.
    """
    with transaction.atomic():
        tokens = ApiToken.objects.select_for_update().filter(pk=token_id)
        if owner is not None:
            tokens = tokens.filter(user=owner)
        token = tokens.select_related("user").first()
        if token is None:
            raise ApiToken.DoesNotExist(f"no API token {token_id}")
        if token.revoked_at is not None:
            raise TokenRefused(f"The token {token.prefix}… was already revoked.")
        token.revoked_at = timezone.now()
        token.revoked_by = actor
        token.save(update_fields=["revoked_at", "revoked_by"])
        audit_record(
            actor=actor,
            verb=AuditVerb.API_TOKEN_REVOKED,
            object_type="api_token",
            object_id=str(token.pk),
            before={"revoked": False},
            after={
                "user": token.user.get_username(),
                "name": token.name,
                "prefix": token.prefix,
                "revoked": True,
            },
        )
    return token


def api_token_authenticate(authorization: str | None) -> ApiToken | None:
    """The usable token of an active user behind ``Authorization: Bearer <key>``, or None.

    Reading only: whether the call is let through is the view's to say, and only then
    does ``api_token_used`` record it.
    """
    if not authorization:
        return None
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key.startswith(TOKEN_PREFIX):
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=_digest(key)).first()
    if token is None or not token.user.is_active or not token.is_usable(timezone.now()):
        return None
    return token


def api_token_used(*, token: ApiToken) -> None:
    """Record that a call with the token was let through (one UPDATE, no audit event)."""
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
