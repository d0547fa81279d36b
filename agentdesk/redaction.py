"""Secret-looking values replaced by stable placeholders before anything is stored.

Applied where data is written, once, at every storage path (docs/audit.md lists them): a
run's input and first messages, every step record, the checkpoint, every error (built by
``agentdesk.errors.error_payload``), the run's error and answer, every proposed call and its
result, every log line and audit event, and every row written through ``redact_row`` (dead
letters, approval requests, decisions, golden candidates).

A small regex module rather than a library: detect-secrets scans files line by line and
guesses with entropy (it would flag order ids and hashes), and scrubadub and Presidio aim
at personal data (names, e-mail addresses) that the agent needs to do its work, with NLP
models this project does not want to load in every worker.

What is detected, each replaced by ``[REDACTED:<kind>]`` (the kind says what was there, the
value is gone):

1. the configured model API keys (``settings.AGENTDESK_LLM_ENDPOINTS[*]["api_key"]``), by
   their literal value, whatever they look like (at least 6 characters);
2. PEM private keys, JWTs, API keys with a known prefix (OpenAI ``sk-``, Stripe,
   GitHub ``ghp_`` and friends, Slack ``xox?-``, AWS ``AKIA``/``ASIA``, Google ``AIza``);
3. the credentials after ``Bearer`` or ``Basic``; the password in
   ``scheme://user:password@host`` (the URL keeps its shape: ``scheme://user:***@host``);
4. the value of ``password=``, ``api_key: ``, ``token=`` and similar pairs in text, and the
   value of a mapping key with such a name in structured data;
5. card numbers: 13 to 19 digits, optionally grouped by spaces or dashes, that pass the
   Luhn check (so order numbers, amounts, dates and phone numbers mostly stay).

Redaction is idempotent: a placeholder is never redacted again.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import models

MIN_LITERAL_KEY = 6  # shorter configured "keys" (test dummies) would redact ordinary words

# Names of mapping keys and text pairs whose value is a secret.
_SECRET_NAMES = (
    r"password|passwd|pwd|passphrase|secret|client[_-]?secret|api[_-]?key|apikey|"
    r"access[_-]?key|secret[_-]?key|private[_-]?key|token|access[_-]?token|auth[_-]?token|"
    r"refresh[_-]?token|id[_-]?token|session[_-]?token"
)
# In text "Authorization: Bearer x" is left to _BEARER, which keeps the scheme readable.
_SECRET_KEY = re.compile(rf"^(?:{_SECRET_NAMES}|authorization)$", re.IGNORECASE)

_PLACEHOLDER_AHEAD = r"(?!\[REDACTED:)(?!\*\*\*@)"

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "private_key",
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL
        ),
    ),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")),
    (
        "api_key",
        re.compile(
            r"(?<![\w-])(?:"
            r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}"  # OpenAI, Anthropic
            r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
            r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"  # GitHub
            r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
            r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
            r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id
            r"|AIza[0-9A-Za-z_-]{35}"  # Google
            r")"
        ),
    ),
)
# A credential has a digit somewhere; "bearer instruments" and "Basic questions" stay.
_BEARER = re.compile(
    rf"(\b(?:[Bb]earer|BEARER|Basic)\s+){_PLACEHOLDER_AHEAD}(?=[A-Za-z._~+/-]*[\d=])"
    r"[A-Za-z0-9._~+/=-]{8,}"
)
_URL_PASSWORD = re.compile(
    rf"(\b[a-z][a-z0-9+.-]*://[^\s:/@?#\[\]]+:){_PLACEHOLDER_AHEAD}[^\s@/?#]+(@)", re.IGNORECASE
)
_PAIR = re.compile(
    rf"(\b(?:{_SECRET_NAMES})[\"']?\s*[:=]\s*[\"']?){_PLACEHOLDER_AHEAD}([^\s\"'&,;<>]{{3,}})",
    re.IGNORECASE,
)
# Digits in groups of 1-6 separated by one space or dash: "4111 1111 1111 1111",
# "4111-1111-1111-1111", "4111111111111111". Not inside a word or a dashed id (SO-1002).
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if 13 <= len(digits) <= 19 and _luhn(digits):
        return "[REDACTED:card]"
    return match.group(0)


@lru_cache(maxsize=8)
def _literal_pattern(keys: tuple[str, ...]) -> re.Pattern[str] | None:
    usable = sorted({k for k in keys if len(k) >= MIN_LITERAL_KEY}, key=len, reverse=True)
    if not usable:
        return None
    return re.compile("|".join(re.escape(k) for k in usable))


def _configured_keys() -> tuple[str, ...]:
    endpoints = getattr(settings, "AGENTDESK_LLM_ENDPOINTS", {}) or {}
    return _keys_of(endpoints)


# Asked for every text redacted (tens a step): the settings' dict is the same object until
# the settings change (a test's override replaces it), so its keys are taken once.
_keys_seen: tuple[object, tuple[str, ...]] = (None, ())


def _keys_of(endpoints: dict[str, Any]) -> tuple[str, ...]:
    global _keys_seen
    seen, keys = _keys_seen
    if seen is not endpoints:
        keys = tuple(
            str(endpoint.get("api_key") or "")
            for endpoint in endpoints.values()
            if isinstance(endpoint, dict)
        )
        _keys_seen = (endpoints, keys)  # one assignment: threads see either pair whole
    return keys


# Texts found to hold no secret are remembered, up to this length and this many: a run's
# steps record the same strings again and again (tool names, arguments, ids, the last
# message as the next step's state). Only clean texts, so no secret is kept in memory.
MEMO_MAX_CHARS = 2_000
MEMO_SIZE = 8_192  # at most ~16 MB of text
_clean: dict[tuple[str, tuple[str, ...]], None] = {}
_clean_lock = threading.Lock()


def redact_text(text: str) -> str:
    """``text`` with every secret-looking value replaced by its placeholder."""
    if not text:
        return text
    key = (text, _configured_keys())
    if key in _clean:
        return text
    redacted = _redacted(text, key[1])
    if redacted == text and len(text) <= MEMO_MAX_CHARS:
        with _clean_lock:
            _clean[key] = None
            if len(_clean) > MEMO_SIZE:
                del _clean[next(iter(_clean))]  # the oldest
    return redacted


def _redacted(text: str, keys: tuple[str, ...]) -> str:
    literal = _literal_pattern(keys)
    if literal is not None:
        text = literal.sub("[REDACTED:api_key]", text)
    for kind, pattern in _PATTERNS:
        text = pattern.sub(f"[REDACTED:{kind}]", text)
    text = _BEARER.sub(r"\1[REDACTED:bearer]", text)
    text = _URL_PASSWORD.sub(r"\1***\2", text)
    text = _PAIR.sub(r"\1[REDACTED:secret]", text)
    return _CARD.sub(_card, text)


def redact_value(value: Any) -> Any:
    """A copy of JSON-like ``value`` with its strings redacted (mappings, lists, strings).

    A mapping key named like a secret (``password``, ``api_key``, ``token``...) has its
    whole string value replaced. Numbers are left alone: a card number is text.
    """
    return _walk(value, redact_text)


def _walk(value: Any, text: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {
            key: (
                "[REDACTED:secret]"
                if isinstance(key, str)
                and _SECRET_KEY.match(key)
                and isinstance(item, str)
                and item
                and not item.startswith("[REDACTED:")
                else _walk(item, text)
            )
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_walk(item, text) for item in value]
    return value


# Columns that hold free text or structured data: where a secret can land.
_TEXT_COLUMNS = (models.TextField, models.JSONField)


def redact_row(instance: models.Model, *, keep: tuple[str, ...] = ()) -> models.Model:
    """``instance`` with every text and JSON column redacted in place, before it is written.

    The choke point of a record's writer (an action, a dead letter, an approval request, a
    decision, a golden candidate): every such column, including one added later, is
    redacted without the writer naming it (tests/agentdesk/test_redaction_paths.py holds
    the models to it). ``keep``: columns the caller redacted already and that must not
    change any more (the arguments an approval hash covers).
    """
    for field in instance._meta.concrete_fields:
        if isinstance(field, _TEXT_COLUMNS) and field.name not in keep:
            value = getattr(instance, field.attname)
            if value:
                setattr(instance, field.attname, redact_value(value))
    return instance
