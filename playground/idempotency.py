"""`Idempotency-Key` on submits (CONTRACT §4): one job per key and body, per account, for 24 h."""

import hashlib
import json
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from .errors import ApiError
from .models import IdempotencyKey, Job

KEEP = timedelta(hours=24)
MAX_LENGTH = 255


def body_hash(data: dict) -> str:
    """JSON-equal bodies hash alike (key order and spacing do not matter)."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str) -> str:
    if not key or len(key) > MAX_LENGTH:
        raise ApiError(
            400, "invalid_idempotency_key", f"Idempotency-Key must be 1 to {MAX_LENGTH} characters."
        )
    return key


def earlier_job(user, key: str, digest: str) -> Job | None:
    """The job an earlier submit with this key made, or None; 409 when its body differed."""
    record = (
        IdempotencyKey.objects.select_related("job")
        .filter(user=user, key=key, created__gte=timezone.now() - KEEP)
        .first()
    )
    if record is None:
        return None
    if record.body_hash != digest:
        raise ApiError(
            409,
            "idempotency_key_reused",
            "This Idempotency-Key was used with a different request body.",
        )
    return record.job


def submit_once(user, key: str, data: dict, submit) -> tuple[Job, bool]:
    """(job, created): `submit(claim)` runs unless an earlier submit claimed the key.

    The claim is inserted in the job's own transaction, so two submits arriving at once
    create one job: the loser's insert hits the unique constraint and its job rolls back.
    """
    digest = body_hash(data)
    job = earlier_job(user, key, digest)
    if job is not None:
        return job, False
    # An expired claim would block the unique constraint.
    IdempotencyKey.objects.filter(user=user, key=key, created__lt=timezone.now() - KEEP).delete()

    def claim(job):
        IdempotencyKey.objects.create(user=user, key=key, body_hash=digest, job=job)

    try:
        with transaction.atomic():
            return submit(claim), True
    except IntegrityError:
        job = earlier_job(user, key, digest)
        if job is None:  # pragma: no cover - the winner's row exists once we lost
            raise
        return job, False
