"""Playground settings: one env-driven module.

Embedded mode (no env at all): SQLite, in-memory channel layer, locmem cache and a Celery worker
inside the web process. Services mode: DATABASE_URL (PostgreSQL) and REDIS_URL.
"""

import os
from decimal import Decimal, InvalidOperation
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), not {value!r}")


def envint(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


def envfloat(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        result = float(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None
    if not result > 0:
        raise ImproperlyConfigured(f"{name} must be a number > 0, not {value!r}")
    return result


def envdecimal(name: str, default: str) -> Decimal:
    value = os.environ.get(name, "") or default
    try:
        result = Decimal(value)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be a decimal number, not {value!r}") from None
    if not result.is_finite() or result < 0:
        raise ImproperlyConfigured(f"{name} must be a decimal number >= 0, not {value!r}")
    return result


DATA_DIR = Path(env("PLAYGROUND_DATA_DIR", str(BASE_DIR / "var")))
REDIS_URL = env("REDIS_URL")
DATABASE_URL = env("DATABASE_URL")
SERVICES_MODE = bool(REDIS_URL)

DEBUG = envbool("DEBUG", default=not SERVICES_MODE)
_DEFAULT_SECRET = "playground-embedded-insecure-secret-key-change-me"
SECRET_KEY = env("SECRET_KEY", _DEFAULT_SECRET)
PRODUCTION = envbool("PLAYGROUND_PRODUCTION", default=False)
if PRODUCTION and (DEBUG or SECRET_KEY == _DEFAULT_SECRET):
    raise ImproperlyConfigured("PLAYGROUND_PRODUCTION needs DEBUG=0 and a SECRET_KEY of its own")
# Keys are hashed with their own secret so rotating SECRET_KEY (sessions) keeps keys valid.
API_KEY_SECRET = env("PLAYGROUND_API_KEY_SECRET", SECRET_KEY)

ALLOWED_HOSTS = [
    h for h in env("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver").split(",") if h
]
CSRF_TRUSTED_ORIGINS = [o for o in env("CSRF_TRUSTED_ORIGINS").split(",") if o]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "ninja",
    "django_htmx",
    "template_partials",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "allauth.usersessions",
    "accounts",
    "billing",
    "playground",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "playground.middleware.ApiErrorMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "accounts.middleware.UserSessionsMiddleware",
]

# What /v1 runs through under ASGI (playground.middleware.ApiHandler): async-native only.
API_MIDDLEWARE = ["playground.middleware.ApiErrorMiddleware"]

ROOT_URLCONF = "playground.urls"
ASGI_APPLICATION = "playground.asgi.application"
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
                "playground.context_processors.header",
            ],
        },
    },
]

if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # A pool per process: under ASGI each request runs in its own thread, so persistent
        # connections (CONN_MAX_AGE) would be one new connection per request.
        DATABASES["default"]["OPTIONS"] = {
            "pool": {"min_size": 1, "max_size": envint("PLAYGROUND_DB_POOL_SIZE", 10)}
        }
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            # Django's SQLite backend, whose write transactions queue in-process (its module).
            "ENGINE": "playground.sqlite",
            "NAME": DATA_DIR / "playground.sqlite3",
            # IMMEDIATE: a transaction takes the write lock at BEGIN, so the ledger's
            # read-check-write is serialised on SQLite as select_for_update does on PostgreSQL.
            # WAL with synchronous=NORMAL: a commit no longer waits for an fsync (23 ms each
            # here, two per job); a crash of the process loses nothing, a power cut at most
            # the last transactions.
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# Every Redis key (queue, cache, channel layer, rate limits) starts with this, so several sites
# can share one Redis server (Redis pub/sub, unlike keys, ignores the db number).
REDIS_PREFIX = env("PLAYGROUND_REDIS_PREFIX", "pg")
if SERVICES_MODE:
    CACHES = {
        "default": {
            "BACKEND": "playground.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_PREFIX,
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            # The pub/sub layer: no BLPOP polling, no per-consumer socket timeouts to trip on.
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL}], "prefix": f"{REDIS_PREFIX}:asgi"},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "playground.layers.EmbeddedChannelLayer"}}

# Celery: the generation engine.
CELERY_BROKER_URL = REDIS_URL or "pgmemory://localhost/"
# pgmemory's worker waits for a put itself, so kombu must not sleep between polls. (On Redis,
# polling_interval is BRPOP's timeout, and 0 would block a worker's shutdown forever.)
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {"global_keyprefix": f"{REDIS_PREFIX}:"} if REDIS_URL else {"polling_interval": 0}
)
# Celery's Django fixup closes the database connection after every task unless told otherwise.
CELERY_DB_REUSE_MAX = 1000
PLAYGROUND_EMBEDDED_WORKER = envbool("PLAYGROUND_EMBEDDED_WORKER", default=not SERVICES_MODE)
PLAYGROUND_EMBEDDED_CONCURRENCY = envint("PLAYGROUND_EMBEDDED_CONCURRENCY", 4)

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = (
    "mandatory" if PRODUCTION else env("PLAYGROUND_EMAIL_VERIFICATION", "optional")
)
ACCOUNT_LOGOUT_ON_GET = False
ACCOUNT_CHANGE_EMAIL = True
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
# Email and password changes need a recent authentication (a fresh login counts: the adapter).
ACCOUNT_REAUTHENTICATION_REQUIRED = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Playground] "
ACCOUNT_REAUTHENTICATION_TIMEOUT = envint("PLAYGROUND_SUDO_SECONDS", 300)
# Brute force: allauth's limits (in the cache: Redis in services mode) plus a lockout.
ACCOUNT_RATE_LIMITS = {
    "login_failed": "10/m/ip,5/5m/key",
    "login": "30/m/ip",
    "signup": "20/m/ip",
    "reset_password": "20/m/ip,5/m/key",
    "reauthenticate": "10/m/user",
}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "Playground"
USERSESSIONS_TRACK_ACTIVITY = True
LOGIN_REDIRECT_URL = "/"
ACCOUNT_LOGOUT_REDIRECT_URL = "/"

EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "Playground <playground@localhost>")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Served straight from the source folders: no collectstatic step before `make run`.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
        "celery": {"level": "WARNING"},
        "playground.engine.runner": {"level": "WARNING"},
    },
}

# Product settings (CONTRACT.md).
PLAYGROUND_SIGNUP_CREDITS = envdecimal("PLAYGROUND_SIGNUP_CREDITS", "10")
PLAYGROUND_WAIT_SECONDS = envint("PLAYGROUND_WAIT_SECONDS", 60)
PLAYGROUND_UPSTREAM_TIMEOUT = envint("PLAYGROUND_UPSTREAM_TIMEOUT", 60)
PLAYGROUND_MAX_BODY_BYTES = envint("PLAYGROUND_MAX_BODY_BYTES", 1024 * 1024)
PLAYGROUND_JOB_TIME_LIMIT = envint("PLAYGROUND_JOB_TIME_LIMIT", 600)
# Engine: per-model overrides live on the model (queue, soft_time_limit, time_limit).
PLAYGROUND_JOB_HARD_TIME_LIMIT = envint(
    "PLAYGROUND_JOB_HARD_TIME_LIMIT", PLAYGROUND_JOB_TIME_LIMIT + 30
)
if PLAYGROUND_JOB_HARD_TIME_LIMIT <= PLAYGROUND_JOB_TIME_LIMIT:
    raise ImproperlyConfigured(
        "PLAYGROUND_JOB_HARD_TIME_LIMIT must exceed PLAYGROUND_JOB_TIME_LIMIT"
    )
# The reaper: how often it looks, how long past its hard limit a running job may go before its
# worker counts as lost, and how long a pending job waits before its queue message is sent again.
PLAYGROUND_REAPER_INTERVAL = envfloat("PLAYGROUND_REAPER_INTERVAL", 60)
PLAYGROUND_REAPER_GRACE = envfloat("PLAYGROUND_REAPER_GRACE", 60)
PLAYGROUND_REQUEUE_AFTER = envfloat("PLAYGROUND_REQUEUE_AFTER", 600)

# Media: generated outputs and uploaded inputs, through Django's storage API. Local files under
# PLAYGROUND_DATA_DIR/media by default; any S3-compatible store when PLAYGROUND_S3_BUCKET is set
# (credentials from boto3's usual sources: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile
# or an instance role). Either way files are private and served only by signed, expiring links.
PLAYGROUND_S3_BUCKET = env("PLAYGROUND_S3_BUCKET")
if PLAYGROUND_S3_BUCKET:
    _media_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": PLAYGROUND_S3_BUCKET,
            "endpoint_url": env("PLAYGROUND_S3_ENDPOINT_URL") or None,
            "region_name": env("PLAYGROUND_S3_REGION") or None,
            "location": env("PLAYGROUND_S3_PREFIX"),
            "addressing_style": env("PLAYGROUND_S3_ADDRESSING_STYLE") or None,
            "default_acl": "private",
            "file_overwrite": False,
            "querystring_auth": True,
        },
    }
else:
    _media_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": DATA_DIR / "media", "base_url": "/media/"},
    }
STORAGES = {
    "default": _media_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Used for absolute media URLs where no request tells the host (e.g. events sent by a worker).
PLAYGROUND_PUBLIC_URL = env("PLAYGROUND_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
PLAYGROUND_MEDIA_URL_SECONDS = envint("PLAYGROUND_MEDIA_URL_SECONDS", 24 * 3600)
PLAYGROUND_MAX_UPLOAD_BYTES = envint("PLAYGROUND_MAX_UPLOAD_BYTES", 20 * 1024 * 1024)
# https URLs whose host is on this list may be given as media inputs: exact hosts, or
# ".example.com" for the domain and its subdomains. Empty: no URL inputs from other sites.
PLAYGROUND_INPUT_URL_ALLOWLIST = [
    h.strip().lower() for h in env("PLAYGROUND_INPUT_URL_ALLOWLIST").split(",") if h.strip()
]
PLAYGROUND_INPUT_FETCH_TIMEOUT = envint("PLAYGROUND_INPUT_FETCH_TIMEOUT", 10)
PLAYGROUND_ESPEAK_BIN = env("PLAYGROUND_ESPEAK_BIN", "espeak-ng")

# Billing (issue #4): Stripe top-ups work only when both keys are set.
STRIPE_SECRET_KEY = env("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = env("STRIPE_WEBHOOK_SECRET")
PLAYGROUND_CREDIT_CURRENCY = env("PLAYGROUND_CREDIT_CURRENCY", "usd").lower()
# Where emails sent from workers link to (no request there to build a URL from).
PLAYGROUND_SITE_URL = env("PLAYGROUND_SITE_URL", "http://127.0.0.1:8000").rstrip("/")


def _credit_packs(text: str) -> list[tuple[Decimal, int]]:
    """`CREDITS=PRICE,...` (e.g. `10=5,50=20.00`) → [(credits, price in cents)]."""
    packs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            credits, price = (Decimal(x.strip()) for x in item.split("="))
        except (ValueError, InvalidOperation):
            raise ImproperlyConfigured(
                f"PLAYGROUND_CREDIT_PACKS: {item!r} is not CREDITS=PRICE"
            ) from None
        cents = price * 100
        if credits <= 0 or cents < 1 or cents != cents.to_integral_value():
            raise ImproperlyConfigured(f"PLAYGROUND_CREDIT_PACKS: bad pack {item!r}")
        packs.append((credits, int(cents)))
    return packs


PLAYGROUND_CREDIT_PACKS = _credit_packs(env("PLAYGROUND_CREDIT_PACKS", "10=5,50=20,200=70"))

# Webhooks (docs/webhooks.md): hosts that may be plain http or private/loopback addresses.
PLAYGROUND_WEBHOOK_ALLOW_HOSTS = [
    h.strip().lower() for h in env("PLAYGROUND_WEBHOOK_ALLOW_HOSTS").split(",") if h.strip()
]
PLAYGROUND_WEBHOOK_MAX_ATTEMPTS = envint("PLAYGROUND_WEBHOOK_MAX_ATTEMPTS", 6)
PLAYGROUND_WEBHOOK_RETRY_SECONDS = float(env("PLAYGROUND_WEBHOOK_RETRY_SECONDS", "5"))
PLAYGROUND_WEBHOOK_TIMEOUT = envint("PLAYGROUND_WEBHOOK_TIMEOUT", 10)

# Jobs pending or running at once per account, by tier: "free:5,pro:50" (unset: no limit).
PLAYGROUND_CONCURRENT_JOBS = {}
for _item in env("PLAYGROUND_CONCURRENT_JOBS").split(","):
    if _item.strip():
        _tier, _, _limit = _item.partition(":")
        try:
            PLAYGROUND_CONCURRENT_JOBS[_tier.strip()] = int(_limit)
        except ValueError:
            raise ImproperlyConfigured(
                f"PLAYGROUND_CONCURRENT_JOBS must look like free:5,pro:50, not {_item!r}"
            ) from None

# Rate budgets per key tier, overriding CONTRACT §6's defaults: "pro:1200/100000" (per minute/day).
PLAYGROUND_RATE_TIERS = {}
for _item in env("PLAYGROUND_RATE_TIERS").split(","):
    if _item.strip():
        _tier, _, _numbers = _item.partition(":")
        try:
            _minute, _day = (int(n) for n in _numbers.split("/"))
        except ValueError:
            raise ImproperlyConfigured(
                f"PLAYGROUND_RATE_TIERS must look like pro:1200/100000, not {_item!r}"
            ) from None
        PLAYGROUND_RATE_TIERS[_tier.strip()] = (_minute, _day)

# Jobs of upstream (OpenAI-compatible) models asked for on /v1/chat/completions and
# /v1/completions run in the web process that holds the client's connection, not on a worker:
# the same runner, billing and events, without the queue round trip (bench/proxy.py).
PLAYGROUND_INLINE_UPSTREAM = envbool("PLAYGROUND_INLINE_UPSTREAM", True)
# How long a web process trusts what it read of a model (prices, upstream, enabled) before
# reading it again; a change made in the same process applies at once (CONTRACT: 5 s).
PLAYGROUND_MODEL_CACHE_SECONDS = envfloat("PLAYGROUND_MODEL_CACHE_SECONDS", 2.0)
# Idle request threads the /v1 handler keeps, each with its database connection.
PLAYGROUND_API_THREADS = envint("PLAYGROUND_API_THREADS", 64)
# Streamed inline upstream jobs one web process runs at once (a thread each while the upstream
# answers); more wait for a thread.
PLAYGROUND_INLINE_STREAMS = envint("PLAYGROUND_INLINE_STREAMS", 256)
