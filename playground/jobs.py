"""Jobs: submit, ownership lookup, status documents, cancel. For the API, pages and consumers."""

import json
import logging
import uuid
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from pydantic import ValidationError

from billing import ledger

from . import inputs, media, pricing, sql, timing
from .engine import events, registry
from .errors import ApiError, from_validation_error
from .models import AIModel, Job, MediaFile
from .schemas import params_for

log = logging.getLogger(__name__)


def validate_params(model: AIModel, data: dict, user=None) -> dict:
    """Validated, normalised parameters; raises ApiError(400) naming the bad field.

    With `user`, media inputs (URLs, data: URIs) are fetched, checked and stored as the user's
    files (playground/inputs.py), and the parameters name those files.
    """
    try:
        params = params_for(model).model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    params = params.model_dump(mode="json")
    if user is not None:
        params = inputs.resolve(params_for(model), params, user, sent=data)
    return params


def discard_new_inputs(model: AIModel, params: dict, sent: dict) -> None:
    """Delete the input files `validate_params` stored for a submit that made no job (refused,
    or an idempotent replay), so each retry does not leave one more file behind.

    A file the client named (its upload or signed link carries the file's id) was there before
    and stays; only files stored from data: URIs or fetched URLs, ids fresh from this submit, go.
    """
    raw = json.dumps(sent)
    for name in inputs.media_fields(params_for(model)):
        ref = params.get(name)
        if not isinstance(ref, str):
            continue
        public_id = ref.split("/", 1)[0]
        if public_id not in raw:
            MediaFile.objects.filter(public_id=public_id, job=None).delete()


def submit_job(
    user,
    model: AIModel,
    params: dict,
    api_key=None,
    within=None,
    webhook=None,
    extra=None,
    enqueue=True,
    start=False,
) -> Job:
    """Create a job, hold its worst-case cost and queue it once the transaction commits.

    `within(job)`, if given, runs inside the job's transaction (e.g. claiming an idempotency key).
    `webhook` is (url, events) from `webhooks.from_body`, already checked; `extra` more Job
    fields (a batch and its index). `enqueue=False` leaves the job pending for the caller to
    run (`runner.run_job`) in this process; `start=True` (with it) creates it running, for
    the caller to run at once (`runner.execute`).
    """
    webhook_url, webhook_events = webhook or ("", [])
    hold = pricing.worst_case(model, params, registry.prompt_tokens_bound(model, params))
    now = timezone.now()
    try:
        with transaction.atomic():
            check_concurrency(user, api_key)
            job = Job(
                user=user,
                api_key=api_key,
                model=model,
                model_slug=model.slug,
                modality=model.modality,
                params=params,
                hold_amount=hold,
                hold_open=hold > 0,
                queued_at=now,
                status=Job.RUNNING if start else Job.PENDING,
                started_at=now if start else None,
                webhook_url=webhook_url,
                webhook_events=webhook_events,
                **(extra or {}),
            )
            sql.insert([job])  # the ORM's save, without its statement compiler (sql.py)
            if hold > 0:
                ledger.hold(user, job, hold, key=api_key)
            if within is not None:
                within(job)
            if enqueue:
                transaction.on_commit(lambda: _enqueue_or_fail(job))
    except ledger.InsufficientCredits as exc:
        raise ApiError(402, "insufficient_credits", str(exc)) from None
    except ledger.KeySpendCapReached as exc:
        note_cap_reached(api_key)
        raise ApiError(402, "key_spend_cap_reached", str(exc)) from None
    if job.status == Job.FAILED:
        raise ApiError(
            503, "engine_unavailable", "The generation engine is unavailable; try again."
        )
    return job


def check_concurrency(user, api_key=None) -> None:
    """429 `concurrency_limited` when the account already has its tier's jobs in flight.

    Called inside the submit's transaction with the account row locked, so simultaneous
    submits are counted one after another.
    """
    tier = api_key.tier if api_key is not None else getattr(user, "tier", "free")
    limit = settings.PLAYGROUND_CONCURRENT_JOBS.get(tier)
    if not limit:
        return
    from billing.models import CreditAccount

    ledger.account_for(user)
    CreditAccount.objects.select_for_update().filter(user=user).first()
    active = Job.objects.filter(user=user, status__in=[Job.PENDING, Job.RUNNING]).count()
    if active >= limit:
        raise ApiError(
            429,
            "concurrency_limited",
            f"{active} jobs of this account are pending or running; the {tier} tier allows "
            f"{limit} at once. Retry when one finishes.",
            headers={"Retry-After": "1"},
        )


def note_cap_reached(key) -> None:
    """Audit a refused submit once per cap window."""
    from accounts.keys import record
    from accounts.models import ApiKey

    since = ledger.period_start(key.spend_cap_period)
    with transaction.atomic():
        # The key row lock makes check-then-insert safe against simultaneous refusals.
        ApiKey.objects.select_for_update().filter(pk=key.pk).first()
        events = key.events.filter(kind="cap_reached")
        if since is not None:
            events = events.filter(created__gte=since)
        if not events.exists():
            period = key.spend_cap_period or "total"
            record(key, "cap_reached", f"cap {ledger.fmt(key.spend_cap)} {period}")


def _enqueue_or_fail(job: Job) -> None:
    """Queue the job; if the broker is down, fail it at once with its hold released."""
    events.publish_user_job(job)
    try:
        with timing.span("queue"):
            registry.enqueue(job)
    except Exception:
        log.exception("could not enqueue job %s", job.request_id)
        with transaction.atomic():
            if Job.objects.filter(pk=job.pk, status=Job.PENDING).update(
                status=Job.FAILED,
                cost=0,
                finished_at=timezone.now(),
                error_code="engine_unavailable",
                error_message="The generation engine is unavailable. Nothing was charged.",
            ):
                ledger.settle(job, None)
        job.status = Job.FAILED


def get_job_for_user(user, request_id) -> Job:
    """The user's job, or ApiError 404 for an unknown id and for another user's job alike."""
    try:
        request_id = uuid.UUID(str(request_id))
    except (ValueError, TypeError):
        raise ApiError(404, "request_not_found", "No such request.", "request_id") from None
    # Every poll runs this: `sql.fetch`, not the ORM's compiler (the model loads if used).
    field = Job._meta.get_field("request_id")
    found = sql.fetch(
        Job,
        "WHERE request_id = %s AND user_id = %s",
        [field.get_db_prep_value(request_id, connection), user.pk],
    )
    if not found:
        raise ApiError(404, "request_not_found", "No such request.", "request_id")
    return found[0]


def status_document(job: Job, base_url: str | None = None) -> dict:
    """The job as CONTRACT §4 shows it; media links are made absolute on `base_url`
    (the request's scheme://host; PLAYGROUND_PUBLIC_URL without one)."""
    doc = {
        "request_id": str(job.request_id),
        "model": job.model_slug,
        "status": job.status,
        "created": int(job.created.timestamp()),
        "progress": job.progress,
    }
    if job.status == Job.PENDING:
        doc["queue_position"] = queue_position(job)
    elif job.status == Job.RUNNING:
        live = events.live_state(job.request_id)
        if live:
            doc["progress"] = live.get("progress", job.progress)
            if job.modality == "text":
                doc["text"] = live.get("text", "")
    if job.is_terminal:
        doc["cost"] = ledger.fmt(job.cost or 0)
        doc.update(media.render_output(job.output, job.user_id, base_url))
        if job.usage and job.modality == "text":
            doc["usage"] = {
                k: job.usage.get(k, 0)
                for k in ("prompt_tokens", "completion_tokens", "total_tokens")
            }
        elif job.usage and job.modality == "embedding":
            doc["usage"] = {k: job.usage.get(k, 0) for k in ("prompt_tokens", "total_tokens")}
    if job.status == Job.FAILED:
        doc["error"] = {"code": job.error_code, "message": job.error_message}
    return doc


def queue_position(job: Job) -> int:
    """How many jobs are ahead of this one (0: next to start)."""
    return Job.objects.filter(status=Job.PENDING, created__lt=job.created).count()


def cancel_job(job: Job, delivered: dict | None = None) -> Job:
    """Cancel a pending or running job: hold released, nothing charged; finished jobs unchanged.

    `delivered` is the usage of output already sent to a client whose stream was cut: that,
    and no more, is charged (CONTRACT §8).
    """
    cost = Decimal(0)
    if delivered and job.model is not None and job.hold_open:
        cost = min(pricing.charge(job.model, delivered), job.hold_amount)
    with transaction.atomic():
        changed = Job.objects.filter(pk=job.pk, status__in=[Job.PENDING, Job.RUNNING]).update(
            status=Job.CANCELED,
            finished_at=timezone.now(),
            cost=cost,
            usage=delivered if cost else {},
        )
        if changed:
            ledger.settle(job, cost)
    job.refresh_from_db()
    if changed:
        from .webhooks import job_completed

        events.request_cancel(job.request_id)
        events.publish_result(job.request_id, status_document(job))
        job_completed(job)
        events.publish_user_job(job)
    return job
