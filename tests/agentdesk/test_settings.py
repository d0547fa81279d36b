"""Settings come from the environment and fail loudly on junk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import ROOT, embedded_env

PRINT_MODE = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, "
    "s.CHANNEL_LAYERS['default']['BACKEND'])"
)


def _settings(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = embedded_env(tmp_path, DJANGO_SETTINGS_MODULE="agentdesk.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", PRINT_MODE],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_nothing_set_gives_the_embedded_mode(tmp_path: Path) -> None:
    result = _settings({"AGENTDESK_DEBUG": "true"}, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "filesystem://",
        "channels.layers.InMemoryChannelLayer",
    ]


def test_urls_select_postgres_and_redis(tmp_path: Path) -> None:
    result = _settings(
        {
            "AGENTDESK_SECRET_KEY": "k",
            "DATABASE_URL": "postgres://u@127.0.0.1:5432/x",
            "REDIS_URL": "redis://127.0.0.1:6379/3",
        },
        tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        "redis://127.0.0.1:6379/3",
        "channels_redis.core.RedisChannelLayer",
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "AGENTDESK_SECRET_KEY must be set unless AGENTDESK_DEBUG=true"),
        ({"AGENTDESK_DEBUG": "maybe"}, "AGENTDESK_DEBUG"),
        ({"AGENTDESK_DEBUG": "true", "AGENTDESK_LLM_TIMEOUT_S": "soon"}, "AGENTDESK_LLM_TIMEOUT_S"),
        (
            {"AGENTDESK_DEBUG": "true", "AGENTDESK_MAX_INPUT_BYTES": "-5"},
            "AGENTDESK_MAX_INPUT_BYTES",
        ),
        (
            {"AGENTDESK_DEBUG": "true", "AGENTDESK_LLM_BASE_URL": "ftp://x"},
            "AGENTDESK_LLM_BASE_URL",
        ),
        (
            {"AGENTDESK_DEBUG": "true", "DATABASE_URL": "mysql://u@h/db"},
            "DATABASE_URL must be a postgres:// URL",
        ),
        (
            {"AGENTDESK_DEBUG": "true", "AGENTDESK_LLM_TIMEOUT_S": "700"},
            "AGENTDESK_LLM_TIMEOUT_S must be shorter than AGENTDESK_STEP_MAX_S",
        ),
        (
            {"AGENTDESK_DEBUG": "true", "AGENTDESK_STEP_HEARTBEAT_S": "11"},
            "AGENTDESK_STEP_HEARTBEAT_S must be at most half of AGENTDESK_STEP_LEASE_S",
        ),
        ({"AGENTDESK_DEBUG": "true", "REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL"),
        (
            {"AGENTDESK_DEBUG": "true", "AGENTDESK_BREAKER_MODEL_CONSECUTIVE": "0"},
            "AGENTDESK_BREAKER_MODEL_CONSECUTIVE",
        ),
        (
            {"AGENTDESK_DEBUG": "true", "AGENTDESK_BREAKER_TOOL_WINDOW_S": "soon"},
            "AGENTDESK_BREAKER_TOOL_WINDOW_S",
        ),
        ({"AGENTDESK_DEBUG": "true", "DATABASE_URL": "junk"}, "DATABASE_URL does not parse"),
        ({"AGENTDESK_DEBUG": "true", "AGENTDESK_CELERY_QUEUE": ""}, "AGENTDESK_CELERY_QUEUE"),
        ({"AGENTDESK_DEBUG": "true", "AGENTDESK_AGENTS": " , "}, "AGENTDESK_AGENTS names no"),
        (
            {"AGENTDESK_DEBUG": "true", "AGENTDESK_LLM_ENDPOINTS": "backup"},
            "AGENTDESK_LLM_BACKUP_BASE_URL",
        ),
        (
            {"AGENTDESK_DEBUG": "true", "AGENTDESK_AGENTS": "examples.nope.agent"},
            "AGENTDESK_AGENTS: cannot import 'examples.nope.agent'",
        ),
    ],
)
def test_invalid_values_fail_at_start(env: dict[str, str], message: str, tmp_path: Path) -> None:
    result = _settings(env, tmp_path)

    assert result.returncode == 1
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


# --- SLAs, reminders and the review webhook (docs/sla.md) ---------------------------------

PRINT_SLA = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.CELERY_BEAT_SCHEDULE['approvals-expire']['schedule'], "
    "s.CELERY_BEAT_SCHEDULE['approvals-remind']['schedule'], s.EMAIL_BACKEND, "
    "s.AGENTDESK_BASE_URL)"
)


def _sla_settings(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = embedded_env(
        tmp_path, DJANGO_SETTINGS_MODULE="agentdesk.settings", AGENTDESK_DEBUG="true", **env
    )
    return subprocess.run(
        [sys.executable, "-c", PRINT_SLA],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_sla_defaults_and_overrides(tmp_path: Path) -> None:
    defaults = _sla_settings({}, tmp_path)
    custom = _sla_settings(
        {
            "AGENTDESK_SLA_SWEEP_S": "5",
            "EMAIL_URL": "smtp://mailer:pw@127.0.0.1:2525/?tls=True",
            "AGENTDESK_BASE_URL": "https://agentdesk.example.com/",
            "AGENTDESK_REVIEW_WEBHOOK_URL": "https://chat.example.com/hooks/x",
            "AGENTDESK_REVIEW_WEBHOOK_SECRET": "s" * 16,
        },
        tmp_path,
    )

    assert defaults.returncode == 0, defaults.stderr
    assert defaults.stdout.split() == [
        "30.0",
        "30.0",
        "django.core.mail.backends.console.EmailBackend",
        "http://127.0.0.1:8000",
    ]
    assert custom.returncode == 0, custom.stderr
    assert custom.stdout.split() == [
        "5.0",
        "5.0",
        "django.core.mail.backends.smtp.EmailBackend",
        "https://agentdesk.example.com",
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGENTDESK_SLA_SWEEP_S": "often"}, "AGENTDESK_SLA_SWEEP_S"),
        ({"AGENTDESK_SLA_SWEEP_S": "0"}, "AGENTDESK_SLA_SWEEP_S"),
        (
            {"AGENTDESK_REVIEW_WEBHOOK_URL": "https://chat.example.com/hooks/x"},
            "AGENTDESK_REVIEW_WEBHOOK_SECRET must be set",
        ),
        (
            {
                "AGENTDESK_REVIEW_WEBHOOK_URL": "https://chat.example.com/hooks/x",
                "AGENTDESK_REVIEW_WEBHOOK_SECRET": "short",
            },
            "AGENTDESK_REVIEW_WEBHOOK_SECRET must be set",
        ),
        (
            {"AGENTDESK_REVIEW_WEBHOOK_URL": "ftp://chat.example.com"},
            "AGENTDESK_REVIEW_WEBHOOK_URL",
        ),
        ({"AGENTDESK_REVIEW_WEBHOOK_TIMEOUT_S": "-1"}, "AGENTDESK_REVIEW_WEBHOOK_TIMEOUT_S"),
        ({"AGENTDESK_REVIEW_WEBHOOK_RETRIES": "many"}, "AGENTDESK_REVIEW_WEBHOOK_RETRIES"),
        ({"AGENTDESK_BASE_URL": "agentdesk.example.com"}, "AGENTDESK_BASE_URL"),
        ({"EMAIL_URL": "junk"}, "EMAIL_URL has an unknown scheme"),
        ({"EMAIL_URL": "smtp://host:port"}, "EMAIL_URL"),
    ],
)
def test_invalid_sla_settings_fail_at_start(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    result = _sla_settings(env, tmp_path)

    assert result.returncode == 1
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr
    assert "s" * 16 not in result.stderr


# --- websocket origins (reviews.consumers, agentdesk.asgi) --------------------------------

PRINT_ORIGINS = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(' '.join(s.AGENTDESK_WEBSOCKET_ORIGINS))"
)


@pytest.mark.parametrize(
    ("env", "origins"),
    [
        ({}, ["http://127.0.0.1:8000"]),
        (
            {
                "AGENTDESK_BASE_URL": "https://AgentDesk.example.com/desk/",
                "AGENTDESK_CSRF_TRUSTED_ORIGINS": "https://agentdesk.example.com,"
                "https://review.example.com:8443, *",
            },
            ["https://agentdesk.example.com", "https://review.example.com:8443"],
        ),
    ],
)
def test_invariant_9_websocket_origins_are_the_base_url_and_the_trusted_origins_whole(
    tmp_path: Path, env: dict[str, str], origins: list[str]
) -> None:
    clean = embedded_env(
        tmp_path, DJANGO_SETTINGS_MODULE="agentdesk.settings", AGENTDESK_DEBUG="true", **env
    )
    result = subprocess.run(
        [sys.executable, "-c", PRINT_ORIGINS],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    # Scheme, host and port; never a bare "*", which would accept any origin.
    assert result.stdout.split() == origins
