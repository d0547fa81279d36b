"""AgentDesk settings: environment variables only, parsed once, failing loudly on junk.

Every variable is documented in .env.example. With nothing set, AgentDesk runs in the
embedded mode: SQLite, a Celery broker on the filesystem and an in-memory channel layer, so
`make demo` works on a bare machine. DATABASE_URL selects PostgreSQL (psycopg 3); REDIS_URL
selects the Redis broker and the Redis channel layer. Production sets both.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured
from environs import Env, EnvError
from marshmallow.validate import URL, Length, OneOf, Range

BASE_DIR = Path(__file__).resolve().parent.parent

env = Env(eager=True)
_positive = Range(min=0, min_inclusive=False, error="must be greater than 0")


def _fail(message: str) -> None:
    raise ImproperlyConfigured(message)


try:
    DEBUG = env.bool("AGENTDESK_DEBUG", False)
    DATA_DIR = Path(env.str("AGENTDESK_DATA_DIR", str(BASE_DIR / ".data"))).resolve()
    SECRET_KEY = env.str("AGENTDESK_SECRET_KEY", "")
    ALLOWED_HOSTS = [
        host.strip() for host in env.list("AGENTDESK_ALLOWED_HOSTS", ["localhost", "127.0.0.1"])
    ]
    _origins: list[str] = env.list("AGENTDESK_CSRF_TRUSTED_ORIGINS", [])
    CSRF_TRUSTED_ORIGINS = [origin.strip() for origin in _origins]
    # Behind a TLS-terminating proxy: trust its X-Forwarded-Proto, secure cookies, HSTS.
    AGENTDESK_HTTPS = env.bool("AGENTDESK_HTTPS", False)
    # Further Django apps, e.g. the one holding your own agents' models.
    AGENTDESK_EXTRA_APPS: list[str] = env.list("AGENTDESK_EXTRA_APPS", [])
    DATABASE_URL = env.str("DATABASE_URL", "")
    REDIS_URL = env.str(
        "REDIS_URL",
        "",
        validate=lambda v: not v or URL(schemes={"redis", "rediss"}, require_tld=False)(v),
    )
    LOG_LEVEL = env.str(
        "AGENTDESK_LOG_LEVEL", "INFO", validate=OneOf(["DEBUG", "INFO", "WARNING", "ERROR"])
    )
    AGENTDESK_AGENTS: list[str] = [
        path.strip()
        for path in env.list("AGENTDESK_AGENTS", ["examples.support.agent.support_agent"])
        if path.strip()
    ]
    AGENTDESK_LLM_BASE_URL = env.str(
        "AGENTDESK_LLM_BASE_URL",
        "http://127.0.0.1:8001/v1",
        validate=URL(schemes={"http", "https"}, require_tld=False),
    )
    AGENTDESK_LLM_API_KEY = env.str("AGENTDESK_LLM_API_KEY", "sk-simulator")
    AGENTDESK_LLM_TIMEOUT_S = env.float("AGENTDESK_LLM_TIMEOUT_S", 30.0, validate=_positive)
    AGENTDESK_MAX_INPUT_BYTES = env.int("AGENTDESK_MAX_INPUT_BYTES", 64 * 1024, validate=_positive)
    # A step's lease on its run, renewed every heartbeat while the step is alive
    # (runs.kernel.leases): a dead worker's step is redone about a lease after it died.
    AGENTDESK_STEP_LEASE_S = env.float("AGENTDESK_STEP_LEASE_S", 20.0, validate=_positive)
    AGENTDESK_STEP_HEARTBEAT_S = env.float("AGENTDESK_STEP_HEARTBEAT_S", 5.0, validate=_positive)
    # The longest a lease is renewed for one step; a step stuck longer is redone elsewhere.
    AGENTDESK_STEP_MAX_S = env.float("AGENTDESK_STEP_MAX_S", 600.0, validate=_positive)
    # A step enqueued this long ago and never claimed is enqueued again (a lost message).
    AGENTDESK_STEP_REDELIVER_S = env.float("AGENTDESK_STEP_REDELIVER_S", 120.0, validate=_positive)
    # How long a step task goes on with its run's next steps itself (runs.kernel.stepping.chaining);
    # 0 sends every step through the broker.
    AGENTDESK_STEP_CHAIN_S = env.float(
        "AGENTDESK_STEP_CHAIN_S", 30.0, validate=Range(min=0, error="must be 0 or more")
    )
    AGENTDESK_RECOVERY_INTERVAL_S = env.float(
        "AGENTDESK_RECOVERY_INTERVAL_S", 5.0, validate=_positive
    )
    AGENTDESK_CELERY_QUEUE = env.str(
        "AGENTDESK_CELERY_QUEUE", "agentdesk", validate=Length(min=1, max=100)
    )
    # Further model endpoints besides "default", each with its own URL and key variables.
    _extra_endpoints: list[str] = env.list("AGENTDESK_LLM_ENDPOINTS", [])
    AGENTDESK_LLM_ENDPOINTS = {
        "default": {"base_url": AGENTDESK_LLM_BASE_URL, "api_key": AGENTDESK_LLM_API_KEY}
    }
    for _alias in _extra_endpoints:
        if not _alias.isidentifier():
            raise ImproperlyConfigured(f"AGENTDESK_LLM_ENDPOINTS: bad endpoint alias {_alias!r}")
        _prefix = f"AGENTDESK_LLM_{_alias.upper()}"
        AGENTDESK_LLM_ENDPOINTS[_alias] = {
            "base_url": env.str(
                f"{_prefix}_BASE_URL", validate=URL(schemes={"http", "https"}, require_tld=False)
            ),
            "api_key": env.str(f"{_prefix}_API_KEY", AGENTDESK_LLM_API_KEY),
        }
    # The judge's model (evals.judge), on the default endpoint, for an agent's judge
    # version 1; later versions name their own.
    AGENTDESK_JUDGE_MODEL = env.str("AGENTDESK_JUDGE_MODEL", "gpt-4o-mini")
    # How recent a passing eval must be for a promotion to production (releases.gate).
    AGENTDESK_GATE_MAX_AGE_DAYS = env.float("AGENTDESK_GATE_MAX_AGE_DAYS", 7.0, validate=_positive)
    AGENTDESK_RETRY_ATTEMPTS = env.int("AGENTDESK_RETRY_ATTEMPTS", 3, validate=_positive)
    AGENTDESK_RETRY_MAX_WAIT_S = env.float("AGENTDESK_RETRY_MAX_WAIT_S", 20.0, validate=_positive)
    AGENTDESK_DB_POOL_MAX = env.int("AGENTDESK_DB_POOL_MAX", 10, validate=_positive)
    # Circuit breakers (runs.gateway.breakers): this many failures of one endpoint or tool within
    # the window, or this many in a row however slowly they come, open its breaker; after
    # the cooldown one probe call is let through.
    AGENTDESK_BREAKER_FAILURES = env.int("AGENTDESK_BREAKER_FAILURES", 5, validate=_positive)
    AGENTDESK_BREAKER_WINDOW_S = env.float("AGENTDESK_BREAKER_WINDOW_S", 60.0, validate=_positive)
    AGENTDESK_BREAKER_CONSECUTIVE = env.int("AGENTDESK_BREAKER_CONSECUTIVE", 5, validate=_positive)
    # The same three per kind of breaker (MODEL: the endpoints, TOOL: the tools); unset
    # (None), the kind takes the value above.
    AGENTDESK_BREAKER_MODEL_FAILURES: int | None = env.int(
        "AGENTDESK_BREAKER_MODEL_FAILURES", None, validate=_positive
    )
    AGENTDESK_BREAKER_MODEL_WINDOW_S: float | None = env.float(
        "AGENTDESK_BREAKER_MODEL_WINDOW_S", None, validate=_positive
    )
    AGENTDESK_BREAKER_MODEL_CONSECUTIVE: int | None = env.int(
        "AGENTDESK_BREAKER_MODEL_CONSECUTIVE", None, validate=_positive
    )
    AGENTDESK_BREAKER_TOOL_FAILURES: int | None = env.int(
        "AGENTDESK_BREAKER_TOOL_FAILURES", None, validate=_positive
    )
    AGENTDESK_BREAKER_TOOL_WINDOW_S: float | None = env.float(
        "AGENTDESK_BREAKER_TOOL_WINDOW_S", None, validate=_positive
    )
    AGENTDESK_BREAKER_TOOL_CONSECUTIVE: int | None = env.int(
        "AGENTDESK_BREAKER_TOOL_CONSECUTIVE", None, validate=_positive
    )
    AGENTDESK_BREAKER_COOLDOWN_S = env.float(
        "AGENTDESK_BREAKER_COOLDOWN_S", 30.0, validate=_positive
    )
    # SLAs (reviews.tasks): how often beat sweeps overdue requests and due reminders.
    AGENTDESK_SLA_SWEEP_S = env.float("AGENTDESK_SLA_SWEEP_S", 30.0, validate=_positive)
    # Where people reach this installation; links in reminders and webhooks start here.
    AGENTDESK_BASE_URL = env.str(
        "AGENTDESK_BASE_URL",
        "http://127.0.0.1:8000",
        validate=URL(schemes={"http", "https"}, require_tld=False),
    ).rstrip("/")
    # Where a websocket may come from, compared whole (scheme, host and port): the
    # address above and the origins trusted for forms. A page of another origin, even of
    # the same host on another port or scheme, must not open a socket with a reviewer's
    # cookie.
    AGENTDESK_WEBSOCKET_ORIGINS = list(
        dict.fromkeys(
            _origin.lower()
            for _origin in (
                "{0.scheme}://{0.netloc}".format(urlsplit(AGENTDESK_BASE_URL)),
                *CSRF_TRUSTED_ORIGINS,
            )
            # "*" would let channels' validator accept any origin at all.
            if "://" in _origin
        )
    )
    # A signed webhook for reviewers' chat tools (docs/sla.md); unset: no webhook.
    AGENTDESK_REVIEW_WEBHOOK_URL = env.str(
        "AGENTDESK_REVIEW_WEBHOOK_URL",
        "",
        validate=lambda v: not v or URL(schemes={"http", "https"}, require_tld=False)(v),
    )
    AGENTDESK_REVIEW_WEBHOOK_SECRET = env.str("AGENTDESK_REVIEW_WEBHOOK_SECRET", "")
    AGENTDESK_REVIEW_WEBHOOK_TIMEOUT_S = env.float(
        "AGENTDESK_REVIEW_WEBHOOK_TIMEOUT_S", 5.0, validate=_positive
    )
    AGENTDESK_REVIEW_WEBHOOK_RETRIES = env.int(
        "AGENTDESK_REVIEW_WEBHOOK_RETRIES", 6, validate=Range(min=0, max=20)
    )
    # Django's mail backend as a URL (dj-email-url): console:// prints mail to the log,
    # smtp://user:password@host:587/?tls=True sends it.
    _email = env.dj_email_url("EMAIL_URL", "console://")
    DEFAULT_FROM_EMAIL = env.str("AGENTDESK_EMAIL_FROM", "AgentDesk <agentdesk@localhost>")
except EnvError as exc:
    raise ImproperlyConfigured(f"invalid environment: {exc}") from exc

if not SECRET_KEY:
    if not DEBUG:
        _fail("AGENTDESK_SECRET_KEY must be set unless AGENTDESK_DEBUG=true")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

if not AGENTDESK_AGENTS:
    _fail("AGENTDESK_AGENTS names no agent")

if AGENTDESK_REVIEW_WEBHOOK_URL and len(AGENTDESK_REVIEW_WEBHOOK_SECRET) < 16:
    _fail(
        "AGENTDESK_REVIEW_WEBHOOK_SECRET must be set, at least 16 characters, when "
        "AGENTDESK_REVIEW_WEBHOOK_URL is: receivers verify every webhook with it"
    )

if "EMAIL_BACKEND" not in _email:
    _fail("EMAIL_URL has an unknown scheme; use console://, smtp://, submission:// or smtps://")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email["EMAIL_HOST"] or "localhost"
EMAIL_PORT = _email["EMAIL_PORT"] or 25
EMAIL_HOST_USER = _email["EMAIL_HOST_USER"] or ""
EMAIL_HOST_PASSWORD = _email["EMAIL_HOST_PASSWORD"] or ""
EMAIL_USE_TLS = _email["EMAIL_USE_TLS"]
EMAIL_USE_SSL = _email["EMAIL_USE_SSL"]
# A mail server that does not answer must not hold a worker for long.
EMAIL_TIMEOUT = _email["EMAIL_TIMEOUT"] or 10
SERVER_EMAIL = DEFAULT_FROM_EMAIL

if AGENTDESK_STEP_HEARTBEAT_S * 2 > AGENTDESK_STEP_LEASE_S:
    _fail(
        "AGENTDESK_STEP_HEARTBEAT_S must be at most half of AGENTDESK_STEP_LEASE_S, or one "
        "late heartbeat would let a live step's lease expire"
    )
if AGENTDESK_LLM_TIMEOUT_S >= AGENTDESK_STEP_MAX_S:
    _fail(
        "AGENTDESK_LLM_TIMEOUT_S must be shorter than AGENTDESK_STEP_MAX_S, or a slow model "
        "call would outlive its claim on the run"
    )

INSTALLED_APPS = [
    "daphne",  # before staticfiles: its runserver serves the ASGI app, websockets included
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "guardian",
    "template_partials",
    "ninja",  # the API docs page's template and its Swagger UI files (no CDN)
    "agentdesk",
    "audit",
    "releases",
    "runs",
    "reviews",
    "evals",
    "calibration",
    "examples.support",
    *AGENTDESK_EXTRA_APPS,
]

if AGENTDESK_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = 31_536_000
    SECURE_SSL_REDIRECT = True

MIDDLEWARE = [
    # First, so that every log line and audit event of a request carries its id.
    "agentdesk.logging.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves STATIC_ROOT (collectstatic) from the app server itself, so daphne needs no
    # proxy in front for /static/; a proxy or CDN may still take it over.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, so that its process_exception sees a view's database error first: a 503.
    "agentdesk.error_pages.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "agentdesk.urls"
ASGI_APPLICATION = "agentdesk.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

# --- database -------------------------------------------------------------------------
if DATABASE_URL:
    import dj_database_url

    try:
        # conn_health_checks: Django's pool then passes psycopg_pool's
        # ``check=ConnectionPool.check_connection``, and every connection is checked (one
        # empty query) as it is handed out. Without it, after a PostgreSQL restart each
        # process handed out its dead pooled connections one by one: nine HTTP 500s in a
        # row up to 55 s after the database was back, and steps failed on them.
        _db = dj_database_url.parse(DATABASE_URL, conn_max_age=0, conn_health_checks=True)
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL does not parse: {exc}") from None
    if _db["ENGINE"] != "django.db.backends.postgresql":
        _fail("DATABASE_URL must be a postgres:// URL (PostgreSQL through psycopg 3)")
    # psycopg's pool, per process: a worker with hundreds of threads shares a few
    # connections, because a step holds one only while it reads or writes, never while the
    # model thinks (see runs.services). Threads beyond the pool wait for a connection.
    _db["OPTIONS"] = {
        **_db.get("OPTIONS", {}),  # e.g. ?sslmode=require in the URL
        "pool": {"min_size": 1, "max_size": AGENTDESK_DB_POOL_MAX, "timeout": 30},
        # Parameters bound by the server, so psycopg prepares the statements a step repeats
        # (prepare_threshold): less CPU in the worker and in PostgreSQL (docs/benchmarks.md).
        "server_side_binding": True,
    }
    DATABASES = {"default": _db}
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "agentdesk.sqlite3"),
            "OPTIONS": {
                # The web server and the worker write at once: wait for the lock rather than
                # fail, and take it at BEGIN so two writers never deadlock on an upgrade.
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Celery and Channels ----------------------------------------------------------------
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = AGENTDESK_CELERY_QUEUE
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "recover-stalled-runs": {
        "task": "runs.tasks.recover_stalled_runs",
        "schedule": AGENTDESK_RECOVERY_INTERVAL_S,
    },
    # Both sweeps are safe on several beat hosts; a tick older than one interval is dropped
    # rather than piling up behind a busy worker.
    "approvals-expire": {
        "task": "reviews.tasks.approvals_expire",
        "schedule": AGENTDESK_SLA_SWEEP_S,
        "options": {"expires": AGENTDESK_SLA_SWEEP_S},
    },
    "approvals-remind": {
        "task": "reviews.tasks.approvals_remind",
        "schedule": AGENTDESK_SLA_SWEEP_S,
        "options": {"expires": AGENTDESK_SLA_SWEEP_S},
    },
}

if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    # A message whose worker died unacknowledged comes back after this long; the stalled-run
    # sweeper usually gets there first (see runs.services.runs_recover_stalled).
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {"visibility_timeout": 3600}
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": f"agentdesk:{AGENTDESK_CELERY_QUEUE}"},
        }
    }
else:
    _broker_dir = DATA_DIR / "broker"
    for _sub in ("out", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # The filesystem transport polls; a second between steps would make the demo crawl.
        "polling_interval": 0.1,
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- auth -------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"  # reviewers to their inbox, others to the runs
LOGOUT_REDIRECT_URL = "login"
ANONYMOUS_USER_NAME = None  # guardian: anonymous users get no object permissions

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

# --- i18n, static -----------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"

# --- logging: every line of a run carries its trace id ----------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "trace": {"()": "agentdesk.logging.TraceIdFilter"},
        # Every handler gets it: no secret reaches a log line (docs/audit.md).
        "redact": {"()": "agentdesk.logging.RedactingFilter"},
        "denials": {"()": "agentdesk.logging.ExpectedDenialFilter"},
    },
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s [trace=%(trace_id)s] %(message)s",
        }
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["trace", "redact"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # A refused request (400, 403, 404) is one line, without the traceback Django adds.
        "django.request": {"filters": ["denials"]},
        "httpx": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
    },
}
