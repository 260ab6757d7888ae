"""API keys: creation, hashing, lookup and revocation."""

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import ApiKey

KEY_PREFIX = "pgk_"
PREFIX_LENGTH = 12
# last_used_at is written at most this often per key, so auth stays one read per request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class UnknownKey(Exception):
    """No key, or more than one, matches what was given."""


def hash_key(raw: str) -> str:
    return hmac.new(settings.API_KEY_SECRET.encode(), raw.encode(), hashlib.sha256).hexdigest()


def create_key(user, name: str, tier: str | None = None) -> tuple[ApiKey, str]:
    """Create a key; the raw secret is returned once and never stored."""
    # 32 bytes = 256 random bits.
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        user=user,
        name=name.strip() or "default",
        prefix=raw[:PREFIX_LENGTH],
        hashed=hash_key(raw),
        tier=tier or user.tier,
    )
    return key, raw


def authenticate_key(raw: str) -> ApiKey | None:
    """The active key for a raw secret, or None (unknown, revoked or expired)."""
    if not raw.startswith(KEY_PREFIX) or len(raw) < PREFIX_LENGTH + 8:
        return None
    digest = hash_key(raw)
    candidates = ApiKey.objects.select_related("user").filter(prefix=raw[:PREFIX_LENGTH])
    for key in candidates:
        if hmac.compare_digest(key.hashed, digest):
            if key.status != "active" or not key.user.is_active:
                return None
            touch(key)
            return key
    return None


def touch(key: ApiKey) -> None:
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now


def revoke(key: ApiKey) -> None:
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


def find_key(key_or_prefix: str) -> ApiKey:
    """A key by its full secret or its 12-character listed prefix; raises UnknownKey."""
    value = key_or_prefix.strip()
    if len(value) > PREFIX_LENGTH:
        digest = hash_key(value)
        for key in ApiKey.objects.filter(prefix=value[:PREFIX_LENGTH]):
            if hmac.compare_digest(key.hashed, digest):
                return key
        raise UnknownKey("no such key")
    matches = list(ApiKey.objects.filter(prefix=value)[:2])
    if not matches:
        raise UnknownKey(f"no key with prefix {value!r}")
    if len(matches) > 1:
        raise UnknownKey(f"prefix {value!r} is ambiguous; give the whole key")
    return matches[0]
