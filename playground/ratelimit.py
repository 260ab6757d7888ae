"""Rate limits per API key (CONTRACT §6), counted in `limits` storage: memory or Redis.

Submits and reads have separate budgets; every authenticated request counts, whatever its
outcome. Headers report the window with the fewest requests remaining.
"""

import json
import math
import threading
import time

from django.conf import settings
from limits import RateLimitItemPerDay, RateLimitItemPerMinute
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from .errors import ApiError

# (submits per minute, submits per day); reads get 10× the per-minute submit budget.
# PLAYGROUND_RATE_TIERS (e.g. "pro:1200/100000") overrides a tier's two numbers.
TIERS = {"free": (20, 1_000), "pro": (600, 50_000), **settings.PLAYGROUND_RATE_TIERS}
READ_FACTOR = 10
SUBMIT_PREFIXES = (
    "/v1/generate-",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/batch/completions",
)


_limiter: FixedWindowRateLimiter | None = None
_limiter_lock = threading.Lock()


def limiter() -> FixedWindowRateLimiter:
    global _limiter
    # Built once under a lock: `limits` resolves its redis dependency lazily, and two threads
    # doing that at once made one of them fail ("minimum version … Found version: 0.0.0").
    if _limiter is None:
        with _limiter_lock:
            if _limiter is None:
                url = settings.REDIS_URL
                storage = (
                    storage_from_string(url, key_prefix=f"{settings.REDIS_PREFIX}:limits")
                    if url
                    else MemoryStorage()
                )
                _limiter = FixedWindowRateLimiter(storage)
    return _limiter


def budget(tier: str, kind: str) -> list:
    if tier not in TIERS:
        return []  # unlimited
    per_minute, per_day = TIERS[tier]
    if kind == "submit":
        return [RateLimitItemPerMinute(per_minute), RateLimitItemPerDay(per_day)]
    return [RateLimitItemPerMinute(per_minute * READ_FACTOR)]


def request_kind(request) -> str:
    """'submit' for a request that creates a job, else 'read' (polls included)."""
    if request.method != "POST" or not request.path.startswith(SUBMIT_PREFIXES):
        return "read"
    if request.path.startswith("/v1/generate-"):
        try:
            body = json.loads(request.body or b"{}")
        except (ValueError, UnicodeDecodeError):
            return "submit"
        if isinstance(body, dict) and "model" not in body and "request_id" in body:
            return "read"
    return "submit"


def hit(key, kind: str, cost: int = 1) -> dict:
    """Count `cost` requests of `key`; returns the rate-limit headers, or raises ApiError 429.

    A batch of N prompts costs N submits: one when authenticated, N - 1 more (batch.py).
    """
    items = budget(key.tier, kind)
    if not items:
        return {}
    storage = limiter().storage
    ident = ("pg", kind, str(key.public_id))
    now = time.time()
    allowed, tightest = True, None
    for item in items:
        name = item.key_for(*ident)
        # The count this request made (an atomic INCR in Redis): its own remaining, exactly.
        count = storage.incr(name, item.get_expiry(), amount=cost)
        allowed = allowed and count <= item.amount
        # Whole seconds, rounded up but never past the window's own length.
        reset = min(item.get_expiry(), max(0, math.ceil(storage.get_expiry(name) - now)))
        window = (max(0, item.amount - count), reset, item.amount)
        if tightest is None or window[0] < tightest[0]:
            tightest = window
    remaining, reset, limit = tightest
    headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(reset),
    }
    if not allowed:
        headers["Retry-After"] = str(max(1, reset))
        raise ApiError(
            429,
            "rate_limited",
            f"Rate limit reached for this key's {key.tier} tier; retry in {max(1, reset)} s.",
            headers=headers,
        )
    return headers
