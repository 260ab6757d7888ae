"""Test settings: the real settings, made fast and self-contained for in-process tests.

The database follows DATABASE_URL (PostgreSQL in CI), so ledger and locking tests run on the
real thing; the in-process engine, channel layer and cache stay in memory. Black-box tests in
tests/live.py start real servers with playground.settings instead.
"""

import atexit
import hashlib
import shutil
import tempfile

from playground.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
CHANNEL_LAYERS = {"default": {"BACKEND": "playground.layers.EmbeddedChannelLayer"}}
CELERY_BROKER_URL = "pgmemory://localhost/"
CELERY_BROKER_TRANSPORT_OPTIONS = {"polling_interval": 0}
CELERY_TASK_ALWAYS_EAGER = True
PLAYGROUND_EMBEDDED_WORKER = False
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
LOGGING = {"version": 1, "disable_existing_loggers": False}
WHITENOISE_AUTOREFRESH = True
# A name per checkout, so a bench or a second checkout's run never shares the test database.
_checkout = hashlib.sha1(str(BASE_DIR).encode()).hexdigest()[:8]  # noqa: F405
DATABASES["default"]["TEST"] = {"NAME": f"test_playground_{_checkout}"}  # noqa: F405
# pytest-django's database setup and teardown want plain connections, not the pool.
DATABASES["default"].get("OPTIONS", {}).pop("pool", None)  # noqa: F405
# Media written by tests goes to a scratch folder, never into var/.
_media = tempfile.mkdtemp(prefix="pg-test-media-")
atexit.register(shutil.rmtree, _media, True)
STORAGES = {  # noqa: F405
    **STORAGES,  # noqa: F405
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": _media},
    },
}
