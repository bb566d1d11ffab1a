"""Bosun settings: one module, driven by the environment.

Every value that differs between a laptop and production comes from an
environment variable read through the small helpers below; a malformed value
raises ImproperlyConfigured at start-up instead of misbehaving later.
"""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "insecure-development-key-only-for-debug"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1"] if DEBUG else [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_q",
    "axes",
    "runs",
    "policies",
    "approvals",
    "knowledge",
    "integrations",
    "evals",
]

# The demo app (sample vendors with their fake credits, sample workflows,
# demo history) is installed only where asked: `scripts/demo` and the tests
# set BOSUN_DEMO=1. A production deployment leaves it out.
BOSUN_DEMO = env_bool("BOSUN_DEMO", False)
if BOSUN_DEMO:
    INSTALLED_APPS.append("demo")
    # Credits the sample enrichment vendor charges per call (benchmarks count
    # them); it goes into the tool price table below, which the sample
    # vendors read too, so the table stays the one source.
    BOSUN_ENRICH_CREDITS = env_int("BOSUN_ENRICH_CREDITS", 5)

    # Faults the sample vendors inject, `vendor.fault=rate` (faults 429, 500,
    # timeout; rate 0..1), e.g. "enrichco.429=0.1,mailco.timeout=0.05".
    def _vendor_faults(name: str) -> dict[str, float]:
        faults: dict[str, float] = {}
        for item in env_list(name, []):
            key, _, raw_rate = (part.strip() for part in item.partition("="))
            vendor, _, fault = key.rpartition(".")
            try:
                rate = float(raw_rate)
            except ValueError:
                rate = -1.0
            if not vendor or fault not in ("429", "500", "timeout") or not 0 <= rate <= 1:
                raise ImproperlyConfigured(
                    f"{name} entries look like enrichco.429=0.1, got {item!r}"
                )
            faults[key] = rate
        return faults

    BOSUN_VENDOR_FAULTS = _vendor_faults("BOSUN_VENDOR_FAULTS")
    # The Retry-After a sample vendor's planned 429 asks for.
    BOSUN_VENDOR_RETRY_AFTER_S = env_float("BOSUN_VENDOR_RETRY_AFTER_S", 1.0)

    # Benchmarks only (bench/economics.py): a sample vendor kills its own
    # worker process right after booking a charge, once per chosen run, so
    # recovery is measured inside paid calls. "dir=PATH,enrichco=0.0125,…":
    # per vendor, the share of runs chosen; PATH holds the once-per-run
    # markers. Unset: off.
    def _vendor_kill(name: str) -> dict:
        plan: dict = {"dir": "", "rates": {}}
        for item in env_list(name, []):
            key, _, raw = (part.strip() for part in item.partition("="))
            if key == "dir":
                plan["dir"] = raw
                continue
            try:
                rate = float(raw)
            except ValueError:
                rate = -1.0
            if not key or not 0 <= rate <= 1:
                raise ImproperlyConfigured(f"{name} entries look like enrichco=0.01, got {item!r}")
            plan["rates"][key] = rate
        if plan["rates"] and not os.path.isdir(plan["dir"]):
            raise ImproperlyConfigured(f"{name} needs dir=PATH, an existing directory")
        return plan if plan["rates"] else {}

    BOSUN_VENDOR_KILL = _vendor_kill("BOSUN_VENDOR_KILL")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Outside every other layer, so that what they answer (a 413 included)
    # is marked too: API answers are never cached; every page gets the
    # Content-Security-Policy below.
    "config.middleware.ApiNoStore",
    "csp.middleware.CSPMiddleware",
    # An API path that matches nothing, or a wrong method: the API's error shape.
    "config.middleware.ApiErrorShape",
    # Before anything reads a body: an oversized one is refused with 413.
    "config.middleware.RequestSizeLimit",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: turns a locked-out login into its page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
                "config.context_processors.bosun",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
# DATABASE_URL selects the database (PostgreSQL in production). Without it,
# Bosun runs on an embedded SQLite file: WAL lets the web server and the
# workers read while one writes, the busy timeout makes writers queue instead
# of failing, and IMMEDIATE transactions take the write lock up front so a
# read-then-write transaction cannot fail half-way with "database is locked".
VAR_DIR = Path(env_str("BOSUN_VAR_DIR", str(BASE_DIR / "var")))
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    try:
        DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid URL: {exc}") from None
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "bosun.sqlite3",  # type: ignore[typeddict-item]  # a path is fine
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
# django-q2's ORM broker closes stale connections before every poll: keep
# connections open so a poll is not a new connection.
DATABASES["default"]["CONN_MAX_AGE"] = env_int("CONN_MAX_AGE", 60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Security -----------------------------------------------------------------
# Without DEBUG (production) every default below is the safe one: HTTPS
# only (redirect, HSTS, secure cookies); each can be overridden by the
# variable of the same name. With DEBUG (the local demo on
# http://127.0.0.1) they are off, as plain HTTP needs.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
# No script reads either cookie: htmx sends the CSRF token from the page
# (`hx-headers` on <body>), so both stay out of JavaScript's reach.
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Content-Security-Policy (django-csp) on every answer: scripts, styles,
# images and fetches from this site only (htmx, the admin's and Swagger
# UI's scripts are all served from here), no inline script or style (the
# templates keep theirs in config/static), no plug-ins, no <base>, no
# framing, forms posted here only. Images may also be data: URIs (Swagger
# UI's stylesheet has some); the charts are inline SVG, which is markup.
# The API docs page runs under this policy as it is.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    }
}
# Behind a proxy that terminates TLS, name the header it sets, e.g.
# SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https" (trust it only
# when the proxy always sets it), and the origins forms are posted from.
_proxy_header = env_list("SECURE_PROXY_SSL_HEADER", [])
if _proxy_header and len(_proxy_header) != 2:
    raise ImproperlyConfigured("SECURE_PROXY_SSL_HEADER looks like HTTP_X_FORWARDED_PROTO,https")
SECURE_PROXY_SSL_HEADER = tuple(_proxy_header) or None
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# The largest request body accepted, in bytes (the API's JSON included);
# a larger one is answered 413 before it is read (config.middleware).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("BOSUN_MAX_REQUEST_BYTES", 1024 * 1024)

# Login lockout (django-axes): after AXES_FAILURE_LIMIT failed logins for
# one username from one address, that pair is locked out for
# AXES_COOLOFF_MINUTES, right password or not; on /accounts/login/ and
# /admin/login/ alike. The pair (not the address alone) is locked, so one
# office behind a NAT is not locked out by one person's typos; a success
# resets the count. Behind proxies, BOSUN_PROXY_COUNT says how many: the
# client's address is then read from X-Forwarded-For, as the outermost
# proxy saw it (config.middleware.client_ip), not the proxy's own.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out login
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("AXES_COOLOFF_MINUTES", 15.0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "config.middleware.lockout_response"
AXES_CLIENT_IP_CALLABLE = "config.middleware.client_ip"
BOSUN_PROXY_COUNT = env_int("BOSUN_PROXY_COUNT", 0)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/console/"
LOGOUT_REDIRECT_URL = "login"
STATICFILES_DIRS = [BASE_DIR / "config" / "static"]

# --- Task queue -------------------------------------------------------------
# django-q2 is only the doorbell: a task carries a run id, and the engine
# decides whether there is anything to do. Delivery is at-least-once, so a
# task not acknowledged within `retry` seconds is delivered again; `retry`
# must therefore exceed `timeout`, or a slow task would run twice at once.
# The cluster's sentinel ends a worker still busy a few seconds past
# `timeout`, so a run's task starts a step only if the step's time limit
# ends before then (less BOSUN_LEASE_MARGIN_S), and publish refuses a step
# limit longer than that (runs.engine.timing.step_room_s). A second delivery
# of a run's task cannot claim a run whose lease is held.
BOSUN_TASK_TIMEOUT_S = env_int("BOSUN_TASK_TIMEOUT_S", 300)
Q_CLUSTER = {
    "name": "bosun",
    "workers": env_int("BOSUN_WORKERS", 2),
    "orm": "default",
    "poll": env_float("BOSUN_QUEUE_POLL_S", 0.05),
    "timeout": BOSUN_TASK_TIMEOUT_S,
    "retry": BOSUN_TASK_TIMEOUT_S + 60,
    "max_attempts": 5,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 500,
    "label": "Task queue",
    "sync": env_bool("BOSUN_QUEUE_SYNC", False),
}
# django-q2 takes a cluster's queue from Q_CLUSTER_NAME (a multi-queue
# setup names it in Q_CLUSTER["ALT_CLUSTERS"]); any other name would fail
# deep inside its import, or start a cluster that executes no run.
_QUEUE = os.environ.get("Q_CLUSTER_NAME", "")
_ALT_QUEUES = cast(dict[str, Any], Q_CLUSTER.get("ALT_CLUSTERS") or {})
if _QUEUE and _QUEUE != Q_CLUSTER["name"] and _QUEUE not in _ALT_QUEUES:  # noqa: SIM300
    raise ImproperlyConfigured(
        f"Q_CLUSTER_NAME={_QUEUE!r} names no queue (Q_CLUSTER has no ALT_CLUSTERS entry"
        f" for it); runs are submitted to {Q_CLUSTER['name']!r}: unset Q_CLUSTER_NAME"
    )

# --- Engine -----------------------------------------------------------------
# A claimed run is leased for this long; while a worker holds it, a thread
# of the worker renews the lease every BOSUN_HEARTBEAT_S (at most a third of
# the lease). Short, so a run whose worker died is taken over within seconds
# (runs.engine.heartbeat).
BOSUN_LEASE_S = env_float("BOSUN_LEASE_S", 8.0)
BOSUN_HEARTBEAT_S = env_float("BOSUN_HEARTBEAT_S", 2.0)
# A step whose worker was lost this many times in a row (killed, out of
# memory, stopped by the queue's timeout) is dead-lettered rather than
# executed again: whatever kills its worker would kill the next one too.
BOSUN_MAX_TAKEOVERS = env_int("BOSUN_MAX_TAKEOVERS", 5)
# The review flow: a reviewer who opens a request holds it this long (renewed
# while it stays open), so two reviewers do not work on the same item.
BOSUN_REVIEW_CLAIM_S = env_float("BOSUN_REVIEW_CLAIM_S", 600.0)
# PostgreSQL: the engine's per-step statements are prepared once per
# connection (runs.engine.store). Turn off behind a pooler that cannot carry
# prepared statements (PgBouncer in transaction mode before 1.21).
BOSUN_PG_PREPARE = env_bool("BOSUN_PG_PREPARE", True)
# A seat under a cap, a step-cache claim and a shared answer's purchase are
# held for the step's time limit plus this margin.
BOSUN_LEASE_MARGIN_S = env_float("BOSUN_LEASE_MARGIN_S", 5.0)
# One task advances a run for at most this long before handing it back to
# the queue, so a long run cannot monopolise a worker.
BOSUN_TASK_SLICE_S = env_float("BOSUN_TASK_SLICE_S", 120.0)
# A retry backoff shorter than this is slept inside the task (the run keeps
# its worker); a longer one is handed to the sweeper.
BOSUN_INLINE_WAIT_S = env_float("BOSUN_INLINE_WAIT_S", 2.0)
# How often the sweeper process looks for due timers and expired leases.
BOSUN_SWEEP_INTERVAL_S = env_float("BOSUN_SWEEP_INTERVAL_S", 1.0)
# Who is told that a run has work to do: a dotted path to a callable taking
# a run id. The queue in production; tests may ring inline.
BOSUN_DOORBELL = env_str("BOSUN_DOORBELL", "runs.tasks.ring")
# Checks a publish must pass (dotted paths of callables taking workflow=,
# checksum=, actor=; one raising PublishError refuses it): the eval gate.
BOSUN_PUBLISH_CHECKS = ["evals.gate.check_publish"]
# Called after a live run's start commits, with its id and its workflow's
# (dotted paths); a failure is logged, never the start's: shadow runs.
BOSUN_RUN_STARTED_HOOKS = ["evals.shadow.live_run_started"]
# How a shadow run is started beside a live run (a callable taking the live
# run's id): the queue in production, so the live start never waits for it.
BOSUN_SHADOW_QUEUE = env_str("BOSUN_SHADOW_QUEUE", "evals.tasks.queue_shadow")
# The provider an eval case's `judge` check asks when the case names none
# (empty: BOSUN_DEFAULT_PROVIDER, the real model when a key is set).
BOSUN_EVAL_JUDGE_PROVIDER = env_str("BOSUN_EVAL_JUDGE_PROVIDER", "")

# --- Review queue -------------------------------------------------------------
# Who hears of a new approval request: a dotted path to a callable taking
# its id, called after the request commits. The queue in production, so a
# slow mail server never holds a step.
BOSUN_REVIEW_NOTIFIER = env_str("BOSUN_REVIEW_NOTIFIER", "approvals.tasks.notify")


def _http_url(name: str, default: str) -> str:
    value = env_str(name, default).rstrip("/")
    if value and not value.startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"{name} must be an http(s) URL, got {value!r}")
    return value


# Reviewers' links point here (no request to take the host from in a worker).
# A chat webhook (Slack-style `{"text": …}` JSON) is told of new and overdue
# requests when set; empty: email only.
BOSUN_BASE_URL = _http_url("BOSUN_BASE_URL", "http://127.0.0.1:8000")
BOSUN_REVIEW_WEBHOOK_URL = _http_url("BOSUN_REVIEW_WEBHOOK_URL", "")
# How long telling anyone may take (SMTP, webhook) before it is given up.
BOSUN_REVIEW_NOTIFY_TIMEOUT_S = env_float("BOSUN_REVIEW_NOTIFY_TIMEOUT_S", 5.0)
# Notification routes (admin -> Notification routes) are told of runs
# dead-lettered within this many seconds by the sweeps (older ones are not
# looked at again: a sweeper that was down longer does not flood anyone).
BOSUN_NOTIFY_LOOKBACK_S = env_float("BOSUN_NOTIFY_LOOKBACK_S", 3600.0)

# Plug-ins are listed here, by dotted path: no autodiscovery.
BOSUN_TOOLS: dict[str, str] = {
    "echo": "runs.tools.builtin.Echo",
    "lead.normalize": "runs.tools.builtin.NormalizeLead",
    "wait": "runs.tools.builtin.Wait",
    "http.get_json": "runs.tools.http.GetJson",
    "http.post_json": "runs.tools.http.PostJson",
    "webhook.post": "runs.tools.http.WebhookPost",
    "crm.upsert": "runs.tools.crm.CrmUpsert",
    "crm.get": "runs.tools.crm.CrmGet",
    "email.send": "runs.tools.mail.SendEmail",
}
# An installed app may add tools of its own by the same literal dict, as
# its AppConfig's `bosun_tools` (the demo app's sample vendors do).
# Hosts the HTTP tools may reach, exact names (comma-separated in the env):
# `host` allows any port on it, `host:port` only that port. Empty: none.
BOSUN_HTTP_ALLOWED_HOSTS = env_list("BOSUN_HTTP_ALLOWED_HOSTS", [])
# An HTTP answer larger than this is refused rather than read into a run.
BOSUN_HTTP_MAX_RESPONSE_BYTES = env_int("BOSUN_HTTP_MAX_RESPONSE_BYTES", 1024 * 1024)
# Signs `webhook.post` deliveries (Standard Webhooks; a `whsec_…` secret is
# base64). Unset: deliveries go out unsigned.
BOSUN_WEBHOOK_SIGNING_SECRET = env_str("BOSUN_WEBHOOK_SIGNING_SECRET", "")
# `email.send` goes through Django's email backend; these are its settings.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "bosun@localhost")
BOSUN_LLM_PROVIDERS: dict[str, str] = {
    "scripted": "runs.llm.scripted.ScriptedProvider",
    "replay": "runs.llm.replay.ReplayProvider",
    "anthropic": "runs.llm.anthropic_provider.AnthropicProvider",
}
# The anthropic provider's credentials; an empty base URL means the API's own.
ANTHROPIC_API_KEY = env_str("ANTHROPIC_API_KEY", "")
ANTHROPIC_BASE_URL = env_str("ANTHROPIC_BASE_URL", "")
# llm steps that name no provider use this one: the real model when a key
# is configured, the offline scripted provider otherwise.
BOSUN_DEFAULT_PROVIDER = env_str(
    "BOSUN_LLM_PROVIDER", "anthropic" if ANTHROPIC_API_KEY else "scripted"
)
BOSUN_MODEL_TIERS = {
    "fast": env_str("BOSUN_MODEL_FAST", "claude-haiku-4-5"),
    "balanced": env_str("BOSUN_MODEL_BALANCED", "claude-sonnet-4-6"),
    "best": env_str("BOSUN_MODEL_BEST", "claude-opus-4-7"),
}
# Fallback routes per tier, first the tier's own model: "model" (on the
# step's provider) or "provider:model". When a route's circuit breaker is
# open, or its call fails for an outage (5xx, overloaded, a timeout), an llm
# step asks the next route in the same attempt and records which answered
# and why; a step with `fallback: false` keeps to its first. BOSUN_MODEL_ROUTES
# (JSON, e.g. {"balanced": ["claude-sonnet-4-6", "claude-haiku-4-5"]}) replaces
# these.
BOSUN_MODEL_ROUTES: dict[str, list[str]] = {
    "fast": [BOSUN_MODEL_TIERS["fast"]],
    "balanced": [BOSUN_MODEL_TIERS["balanced"], BOSUN_MODEL_TIERS["fast"]],
    "best": [BOSUN_MODEL_TIERS["best"], BOSUN_MODEL_TIERS["balanced"]],
}
if os.environ.get("BOSUN_MODEL_ROUTES"):
    BOSUN_MODEL_ROUTES = json.loads(os.environ["BOSUN_MODEL_ROUTES"])
# USD per million tokens: input, output, cache read (0.1x input) and cache
# write (1.25x input, 5-minute TTL). The one place prices live; a model
# answering with a dated id is priced as its alias (see runs.llm.base.cost_of).
BOSUN_PRICES = {
    "claude-haiku-4-5": {"input": 1.0, "output": 5.0, "cache_read": 0.10, "cache_write": 1.25},
    "claude-sonnet-4-6": {"input": 3.0, "output": 15.0, "cache_read": 0.30, "cache_write": 3.75},
    "claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cache_read": 0.30, "cache_write": 3.75},
    "claude-opus-4-7": {"input": 5.0, "output": 25.0, "cache_read": 0.50, "cache_write": 6.25},
}
# The offline scripted provider has no price of its own: its estimated usage
# is priced as the model the step requested, so the demo's budgets and cost
# figures read as they would with that model (the console says "scripted").


# A vendor's name, as price tables, policies' credit caps and run totals spell it.
_VENDOR = re.compile(r"^[a-z0-9][a-z0-9_-]{0,59}$")


def _credit_prices(name: str, default: dict[str, str]) -> dict[str, Decimal]:
    """`vendor=usd` pairs: what one credit of each vendor costs in USD."""
    prices = {vendor: Decimal(usd) for vendor, usd in default.items()}
    for item in env_list(name, []):
        vendor, _, raw = (part.strip() for part in item.partition("="))
        try:
            usd = Decimal(raw)
        except InvalidOperation:
            usd = Decimal(-1)
        if not _VENDOR.match(vendor) or not usd.is_finite() or usd < 0:
            raise ImproperlyConfigured(f"{name} entries look like enrichco=0.02, got {item!r}")
        prices[vendor] = usd
    return prices


def _credit_caps(name: str) -> dict[str, int]:
    """`vendor=credits` pairs: the credits a run may spend per vendor."""
    caps = {}
    for item in env_list(name, []):
        vendor, _, raw = (part.strip() for part in item.partition("="))
        if not _VENDOR.match(vendor) or not raw.isdigit():
            raise ImproperlyConfigured(f"{name} entries look like enrichco=500, got {item!r}")
        caps[vendor] = int(raw)
    return caps


def _tool_prices(name: str, default: dict[str, dict]) -> dict[str, dict]:
    """The tool price table: tool name -> {"vendor", "credits", "usd"}, from
    `default` updated by the JSON object in the environment variable."""
    raw = os.environ.get(name)
    try:
        table = {**default, **(json.loads(raw) if raw else {})}
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"{name} must be a JSON object: {exc}") from None
    prices = {}
    for tool, entry in table.items():
        where = f"{name}[{tool!r}]"
        if not isinstance(entry, dict) or set(entry) - {"vendor", "credits", "usd"}:
            raise ImproperlyConfigured(f'{where} looks like {{"vendor": "enrichco", "credits": 5}}')
        vendor, credits = entry.get("vendor", ""), entry.get("credits", 0)
        try:
            usd = Decimal(str(entry.get("usd", "0")))
        except InvalidOperation:
            usd = Decimal(-1)
        if not isinstance(vendor, str) or (vendor and not _VENDOR.match(vendor)):
            raise ImproperlyConfigured(f"{where}: vendor must be a name like enrichco")
        if not isinstance(credits, int) or isinstance(credits, bool) or credits < 0:
            raise ImproperlyConfigured(f"{where}: credits must be a whole number >= 0")
        if credits and not vendor:
            raise ImproperlyConfigured(f"{where}: credits need the vendor that charges them")
        if not usd.is_finite() or usd < 0:
            raise ImproperlyConfigured(f"{where}: usd must be an amount >= 0")
        prices[tool] = {"vendor": vendor, "credits": credits, "usd": usd}
    return prices


# What tools cost, beside the model prices: per tool, the vendor it pays,
# the credits a call costs and/or a USD amount per call (env
# BOSUN_TOOL_PRICES, a JSON object of the same shape, adds or replaces
# entries). A tool that reports its credits in its answer declares
# `cost(args, result)` (runs.tools.base.Tool) and may list here only what is
# known before the call. A tool not listed is free.
BOSUN_TOOL_PRICES: dict[str, dict] = {}
# USD per credit, per vendor (env BOSUN_CREDIT_PRICES="enrichco=0.02,...").
BOSUN_CREDIT_PRICES: dict[str, Decimal] = _credit_prices("BOSUN_CREDIT_PRICES", {})
if BOSUN_DEMO:
    # The sample vendors (demo/vendors.py) charge what this table says.
    BOSUN_TOOL_PRICES = {
        "enrich.company": {"vendor": "enrichco", "credits": BOSUN_ENRICH_CREDITS},
        "outreach.send": {"vendor": "mailco", "credits": 1},
    }
    BOSUN_CREDIT_PRICES = _credit_prices(
        "BOSUN_CREDIT_PRICES", {"enrichco": "0.02", "mailco": "0.02"}
    )
BOSUN_TOOL_PRICES = _tool_prices("BOSUN_TOOL_PRICES", BOSUN_TOOL_PRICES)
for _tool, _price in BOSUN_TOOL_PRICES.items():
    if _price["credits"] and _price["vendor"] not in BOSUN_CREDIT_PRICES:
        raise ImproperlyConfigured(
            f"BOSUN_TOOL_PRICES[{_tool!r}] charges {_price['vendor']} credits, which"
            " BOSUN_CREDIT_PRICES does not price"
        )

# Guardrails. A workflow without a policy runs under these budgets.
BOSUN_DEFAULT_BUDGET = {
    "max_steps": env_int("BOSUN_MAX_STEPS", 100),
    "max_llm_calls": env_int("BOSUN_MAX_LLM_CALLS", 30),
    "max_tool_calls": env_int("BOSUN_MAX_TOOL_CALLS", 100),
    "max_cost_usd": env_str("BOSUN_MAX_COST_USD", "2.00"),
    "max_wall_s": env_int("BOSUN_MAX_WALL_S", 7 * 86400),
    # Credits per vendor, "enrichco=500,mailco=100"; a vendor not listed is
    # capped by max_cost_usd alone (model plus vendor spend).
    "max_credits": _credit_caps("BOSUN_MAX_CREDITS"),
}
# Rate-limit grants are kept one period (all a limit needs) or this long,
# for whoever wants to audit the calls let through.
BOSUN_RATE_GRANT_RETENTION_S = env_float("BOSUN_RATE_GRANT_RETENTION_S", 0.0)
# Circuit breakers (runs.engine.breakers), one per provider model
# ("llm:anthropic:claude-haiku-4-5") and per tool limit key ("vendor:enrichco").
# These are the defaults; admin -> Breakers sets them per key. After
# FAILURES consecutive outage failures (5xx, overloaded, timeouts, connection
# errors) within WINDOW_S the breaker opens: calls wait, holding no worker,
# for COOLDOWN_S (doubled at each failed probe up to MAX_COOLDOWN_S), then
# one probe at a time is let through, for at most PROBE_TIMEOUT_S. When it
# closes, the runs that waited are let go RESUME_PER_S a second.
# BOSUN_BREAKERS=0 turns every breaker off (calls are never held).
BOSUN_BREAKERS = env_bool("BOSUN_BREAKERS", True)
BOSUN_BREAKER_FAILURES = env_int("BOSUN_BREAKER_FAILURES", 5)
BOSUN_BREAKER_WINDOW_S = env_float("BOSUN_BREAKER_WINDOW_S", 60.0)
BOSUN_BREAKER_COOLDOWN_S = env_float("BOSUN_BREAKER_COOLDOWN_S", 10.0)
BOSUN_BREAKER_MAX_COOLDOWN_S = env_float("BOSUN_BREAKER_MAX_COOLDOWN_S", 30.0)
BOSUN_BREAKER_PROBE_TIMEOUT_S = env_float("BOSUN_BREAKER_PROBE_TIMEOUT_S", 120.0)
BOSUN_BREAKER_RESUME_PER_S = env_float("BOSUN_BREAKER_RESUME_PER_S", 20.0)
# A breaker still not closed this long after its failures began is reported
# once per outage (by BOSUN_BREAKER_NOTIFIER): an email to the members of
# BOSUN_ALERT_GROUP, and a JSON post (Slack-compatible `text`) to
# BOSUN_ALERT_WEBHOOK_URL when set.
BOSUN_BREAKER_ALERT_S = env_float("BOSUN_BREAKER_ALERT_S", 900.0)
BOSUN_BREAKER_NOTIFIER = env_str("BOSUN_BREAKER_NOTIFIER", "policies.alerts.breaker_open_too_long")
BOSUN_ALERT_GROUP = env_str("BOSUN_ALERT_GROUP", "operator")
BOSUN_ALERT_WEBHOOK_URL = env_str("BOSUN_ALERT_WEBHOOK_URL", "")
if (
    BOSUN_BREAKER_FAILURES < 1
    or min(
        BOSUN_BREAKER_WINDOW_S,
        BOSUN_BREAKER_COOLDOWN_S,
        BOSUN_BREAKER_PROBE_TIMEOUT_S,
        BOSUN_BREAKER_RESUME_PER_S,
    )
    <= 0
):
    raise ImproperlyConfigured(
        "BOSUN_BREAKER_FAILURES must be 1 or more, and the breaker times and"
        " BOSUN_BREAKER_RESUME_PER_S above 0"
    )
if BOSUN_BREAKER_MAX_COOLDOWN_S < BOSUN_BREAKER_COOLDOWN_S:
    raise ImproperlyConfigured("BOSUN_BREAKER_MAX_COOLDOWN_S is below BOSUN_BREAKER_COOLDOWN_S")
# What a refused start (a full queue) tells the caller to wait, in seconds.
BOSUN_QUEUE_FULL_RETRY_AFTER_S = env_float("BOSUN_QUEUE_FULL_RETRY_AFTER_S", 5.0)

# --- Knowledge graph ----------------------------------------------------------
# How each entity type spells its keys (knowledge.keys): entity type -> dotted
# path of a normaliser. A type not listed is trimmed and lower-cased. An
# installation adds its own types here; a bad path fails at start-up.
BOSUN_ENTITY_KEYS: dict[str, str] = {
    "account": "knowledge.keys.domain_key",
    "person": "knowledge.keys.email_key",
}

# --- Audit log ----------------------------------------------------------------
# Checkpoints of the audit chain's head are signed (HMAC-SHA256) with
# BOSUN_AUDIT_KEY, 32+ characters kept where the database's owner cannot
# read them. Unset: a key derived from SECRET_KEY, so that changing
# SECRET_KEY makes every earlier checkpoint fail verification.
BOSUN_AUDIT_KEY = env_str("BOSUN_AUDIT_KEY", "")
if BOSUN_AUDIT_KEY and len(BOSUN_AUDIT_KEY) < 32:
    raise ImproperlyConfigured("BOSUN_AUDIT_KEY must be at least 32 characters")
# A file each periodic checkpoint is appended to as one JSON line, best on
# storage the database's owner cannot rewrite (a log shipper, an append-only
# mount). Empty: checkpoints are kept in their table only.
BOSUN_AUDIT_CHECKPOINT_FILE = env_str("BOSUN_AUDIT_CHECKPOINT_FILE", "")

# --- Rollout and autonomy lanes -------------------------------------------------
# The share of new runs a version published "as a canary" from admin takes.
BOSUN_CANARY_SHARE_PCT = env_int("BOSUN_CANARY_SHARE_PCT", 10)
if not 1 <= BOSUN_CANARY_SHARE_PCT <= 99:
    raise ImproperlyConfigured("BOSUN_CANARY_SHARE_PCT must be from 1 to 99")
# An `approve` lane is proposed for `auto` after this many consecutive
# human decisions on the tool that approved it as it stood (policies.lanes).
BOSUN_LANE_STREAK = env_int("BOSUN_LANE_STREAK", 20)
if BOSUN_LANE_STREAK < 1:
    raise ImproperlyConfigured("BOSUN_LANE_STREAK must be 1 or more")
# An `auto` lane is proposed back to `approve` when more than this share of
# the sampled runs that called it were flagged by the weekly sample review,
# once at least BOSUN_LANE_BACK_MIN_REVIEWS of them were reviewed.
BOSUN_LANE_BACK_REJECT_RATE = env_float("BOSUN_LANE_BACK_REJECT_RATE", 0.1)
if not 0 <= BOSUN_LANE_BACK_REJECT_RATE < 1:
    raise ImproperlyConfigured("BOSUN_LANE_BACK_REJECT_RATE must be from 0 up to (not) 1")
BOSUN_LANE_BACK_MIN_REVIEWS = env_int("BOSUN_LANE_BACK_MIN_REVIEWS", 10)
if BOSUN_LANE_BACK_MIN_REVIEWS < 1:
    raise ImproperlyConfigured("BOSUN_LANE_BACK_MIN_REVIEWS must be 1 or more")

# --- Tracing ------------------------------------------------------------------
# OpenTelemetry traces of runs (runs.engine.tracing) are exported over OTLP/HTTP
# when an endpoint is set; the exporter reads the other standard variables
# (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, …) itself. No endpoint: no tracing,
# and next to no cost on the engine's hot path.
BOSUN_TRACING = bool(
    env_str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "") or env_str("OTEL_EXPORTER_OTLP_ENDPOINT", "")
) and not env_bool("OTEL_SDK_DISABLED", False)
BOSUN_TRACING_SERVICE_NAME = env_str("OTEL_SERVICE_NAME", "bosun")

# Every log line passes a redacting filter: personal data and secrets
# never reach a log, whatever a caller formats into it.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "lib.logfilter.RedactingFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
