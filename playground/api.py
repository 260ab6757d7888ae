"""The public API under /v1 (CONTRACT.md §3–§6)."""

import asyncio
import base64
import binascii
import json
import logging
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Literal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Count, FloatField, IntegerField, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce, TruncDate
from django.http import Http404, JsonResponse
from django.utils import timezone
from ninja import NinjaAPI, Query
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError

from billing import ledger

from . import catalogue, idempotency, jobs, media, pricing, timing, webhooks
from .auth import ApiKeyAuth, authenticate_request
from .engine import events
from .errors import ApiError, error_body, first_error, loc_to_param
from .models import Job
from .schemas import json_schema

log = logging.getLogger(__name__)


class PlaygroundAPI(NinjaAPI):
    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        """ninja's document, completed from the catalogue of this moment (playground/openapi.py)."""
        from .openapi import complete

        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        return complete(schema)


api = PlaygroundAPI(
    title="Playground API",
    version="1.0.0",
    description="Submit generation jobs, poll or wait for them; OpenAI-compatible endpoints.",
    urls_namespace="api",
    docs_url="/docs",
)
bearer = ApiKeyAuth()
ENVELOPE = ("model", "wait_for_result")


@api.exception_handler(ApiError)
def _api_error(request, exc: ApiError):
    response = JsonResponse(exc.body(), status=exc.status)
    for name, value in exc.headers.items():
        response[name] = value
    return response


@api.exception_handler(NinjaValidationError)
def _validation_error(request, exc):
    first = first_error(exc.errors)
    param = loc_to_param(first.get("loc", ()))
    message = first.get("msg", "Invalid input.")
    return JsonResponse(error_body(400, "invalid_parameter", message, param), status=400)


@api.exception_handler(AuthenticationError)
def _auth_error(request, exc):
    return JsonResponse(error_body(401, "missing_api_key", "Send an API key."), status=401)


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    return JsonResponse(error_body(exc.status_code, "error", str(exc)), status=exc.status_code)


@api.exception_handler(Http404)
def _not_found(request, exc):
    return JsonResponse(error_body(404, "not_found", "Not found."), status=404)


@api.exception_handler(Exception)
def _unexpected(request, exc):
    request_id = getattr(request, "request_id", None)
    log.exception("unexpected API error, request %s", request_id)
    message = "Something went wrong on our side."
    if request_id:
        message += f" Request id: {request_id}."
    return JsonResponse(error_body(500, "internal_error", message), status=500)


def parse_body(request) -> dict:
    if len(request.body) > settings.PLAYGROUND_MAX_BODY_BYTES:
        raise ApiError(413, "request_too_large", "The request body is too large.")
    try:
        data = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    return data


def model_document(model) -> dict:
    return {
        "id": model.slug,
        "object": "model",
        "created": int(model.created.timestamp()),
        "owned_by": model.owned_by,
        "name": model.name,
        "description": model.description,
        "modality": model.modality,
        "endpoint": model.endpoint,
        "pricing": pricing.pricing_document(model),
        "parameters": json_schema(model),
    }


def check_model_allowed(key, slug: str) -> None:
    if key is not None and not key.allows(slug):
        raise ApiError(403, "model_not_allowed", f"This API key may not use {slug}.", "model")


@api.get("/models", auth=None, tags=["models"], summary="List models")
def list_models(request):
    key = authenticate_request(request)
    models = [m for m in catalogue.visible_models() if key is None or key.allows(m.slug)]
    return {"object": "list", "data": [model_document(m) for m in models]}


@api.get("/models/{model_id}", auth=None, tags=["models"], summary="Get a model")
def get_model(request, model_id: str):
    key = authenticate_request(request)
    model = catalogue.get_model(model_id)
    if model is None:
        raise ApiError(404, "model_not_found", f"No model {model_id!r}.", "model")
    check_model_allowed(key, model.slug)
    return model_document(model)


def resolve_model(key, model_id, modality: str):
    """The model a request names, checked: exists, this key may use it, it has this modality."""
    if not isinstance(model_id, str) or not model_id:
        raise ApiError(400, "invalid_parameter", "model is required.", "model")
    model = catalogue.get_model(model_id)
    if model is None:
        raise ApiError(404, "model_not_found", f"No model {model_id!r}.", "model")
    check_model_allowed(key, model.slug)
    if model.modality != modality:
        raise ApiError(
            400,
            "wrong_modality",
            f"{model_id} is a {model.modality} model; use {model.endpoint}.",
            "model",
        )
    return model


def _submit_or_poll(
    key, modality: str, data: dict, idempotency_key: str | None = None
) -> tuple[Job, bool, bool]:
    """(job, submitted, wait): a submit creates a job; a body with only request_id polls it.

    A repeated submit with the same Idempotency-Key and body gives the first job, not submitted.
    """
    wait = data.get("wait_for_result", False)
    if not isinstance(wait, bool):
        raise ApiError(
            400, "invalid_parameter", "wait_for_result must be a boolean.", "wait_for_result"
        )
    if "model" not in data and "request_id" in data:
        return jobs.get_job_for_user(key.user, data["request_id"]), False, wait
    model = resolve_model(key, data.get("model"), modality)
    rest = {k: v for k, v in data.items() if k not in ENVELOPE}
    webhook = webhooks.from_body(rest)
    params = jobs.validate_params(model, rest, user=key.user)

    def submit(claim=None):
        return jobs.submit_job(key.user, model, params, api_key=key, within=claim, webhook=webhook)

    try:
        if idempotency_key is None:
            return submit(), True, wait
        job, created = idempotency.submit_once(key.user, idempotency_key, data, submit)
    except ApiError:
        jobs.discard_new_inputs(model, params, rest)
        raise
    if not created:
        jobs.discard_new_inputs(model, params, rest)
    return job, created, wait


def _refresh(job: Job, base: str | None = None) -> tuple[Job, dict]:
    job.refresh_from_db()
    return job, jobs.status_document(job, base)


async def wait_until_done(job: Job, timeout: float, base: str | None = None) -> tuple[Job, dict]:
    """Wait for the job's result event (or the timeout); returns the job and its document."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout
    try:
        return await _wait(job, loop, deadline, base)
    finally:
        timing.add("wait", loop.time() - started)


async def _wait(job: Job, loop, deadline: float, base: str | None) -> tuple[Job, dict]:
    async with events.JobListener(job.request_id) as listener:
        while True:
            # Checked after joining the group, so a result published meanwhile is not missed.
            job, doc = await sync_to_async(_refresh)(job, base)
            if job.is_terminal or loop.time() >= deadline:
                return job, doc
            while True:
                # Look at the database again at least every 5 s.
                message = await listener.next(min(deadline - loop.time(), 5.0))
                if message is None or message.get("payload", {}).get("type") == "result":
                    break


def _generate_view(modality: str):
    async def generate(request):
        data = parse_body(request)
        idem = request.headers.get("Idempotency-Key")
        if idem is not None:
            idem = idempotency.check_key(idem.strip())
        job, submitted, wait = await sync_to_async(_submit_or_poll)(
            request.api_key, modality, data, idem
        )
        if wait:
            job, doc = await wait_until_done(
                job, settings.PLAYGROUND_WAIT_SECONDS, media.base_url(request)
            )
            return JsonResponse(doc, status=200 if job.is_terminal else 202)
        if submitted:
            return JsonResponse(
                {
                    "request_id": str(job.request_id),
                    "model": job.model_slug,
                    "status": job.status,
                    "created": int(job.created.timestamp()),
                }
            )
        return JsonResponse(await sync_to_async(jobs.status_document)(job, media.base_url(request)))

    generate.__name__ = f"generate_{modality}"
    return generate


for _modality in ("text", "image", "video", "audio"):
    api.post(
        f"/generate-{_modality}",
        auth=bearer,
        tags=["generation"],
        summary=f"Submit or poll a {_modality} job",
        description=(
            'Body `{"model": id, …parameters}` submits a job; `{"request_id": id}` returns its '
            'status document. `"wait_for_result": true` waits for the final document (202 if '
            "still running when the wait ends)."
        ),
    )(_generate_view(_modality))


@api.get("/requests/{request_id}", auth=bearer, tags=["requests"], summary="Get a job")
def get_request(request, request_id: str):
    job = jobs.get_job_for_user(request.api_key.user, request_id)
    return jobs.status_document(job, media.base_url(request))


@api.post("/requests/{request_id}/cancel", auth=bearer, tags=["requests"], summary="Cancel a job")
def cancel_request(request, request_id: str):
    job = jobs.get_job_for_user(request.api_key.user, request_id)
    return jobs.status_document(jobs.cancel_job(job), media.base_url(request))


@api.get(
    "/requests/{request_id}/webhooks",
    auth=bearer,
    tags=["requests"],
    summary="A job's webhook deliveries, one entry per attempt",
)
def request_webhooks(request, request_id: str):
    job = jobs.get_job_for_user(request.api_key.user, request_id)
    deliveries = webhooks.deliveries_for(job)
    return {"object": "list", "data": [webhooks.delivery_document(d) for d in deliveries]}


@api.get("/webhooks/secret", auth=bearer, tags=["webhooks"], summary="Your webhook signing secret")
def webhook_secret(request):
    return {"secret": webhooks.secret_for(request.api_key.user)}


@api.post(
    "/webhooks/secret/rotate",
    auth=bearer,
    tags=["webhooks"],
    summary="Replace your webhook signing secret (the old one stops at once)",
)
def rotate_webhook_secret(request):
    return {"secret": webhooks.rotate_secret(request.api_key.user)}


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        created, pk = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created), int(pk)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "invalid_parameter", "cursor is not valid.", "cursor") from None


def _encode_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(f"{job.created.isoformat()}|{job.pk}".encode()).decode()


@api.get("/requests", auth=bearer, tags=["requests"], summary="List your jobs, newest first")
def list_requests(
    request,
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = None,
    model: str | None = None,
    status: Literal["pending", "running", "success", "failed", "canceled"] | None = None,
):
    if not 1 <= limit <= 100:
        raise ApiError(400, "invalid_parameter", "limit must be between 1 and 100.", "limit")
    qs = Job.objects.filter(user=request.api_key.user)
    if model:
        qs = qs.filter(model_slug=model)
    if status:
        if status not in dict(Job.STATUSES):
            raise ApiError(400, "invalid_parameter", f"unknown status {status!r}.", "status")
        qs = qs.filter(status=status)
    if cursor:
        created, pk = _decode_cursor(cursor)
        qs = qs.filter(created__lte=created).exclude(created=created, pk__gte=pk)
    page = list(qs.order_by("-created", "-id")[: limit + 1])
    has_more = len(page) > limit
    page = page[:limit]
    return {
        "object": "list",
        "data": [jobs.status_document(j, media.base_url(request)) for j in page],
        "has_more": has_more,
        "next_cursor": _encode_cursor(page[-1]) if has_more else None,
    }


@api.get("/user/profile", auth=bearer, tags=["account"], summary="Your account and this key")
def profile(request):
    key = request.api_key
    balance, available = ledger.balances(key.user)
    spend = ledger.key_spend(key)
    remaining = ledger.key_cap_remaining(key)
    return {
        "email": key.user.email,
        "tier": key.tier,
        "balance": ledger.fmt(balance),
        "available": ledger.fmt(available),
        "key": {
            "name": key.name,
            "prefix": key.prefix,
            "spend": ledger.fmt(spend),
            "spend_cap_remaining": None if remaining is None else ledger.fmt(remaining),
        },
    }


@api.get("/usage", auth=bearer, tags=["account"], summary="Your usage per day and model")
def usage(request, start: date | None = None, end: date | None = None):
    """Finished jobs of the account (all keys) per UTC day and model, `start`..`end` inclusive."""
    today = timezone.now().date()
    end_day = end or today
    if start is None and end_day < date.min + timedelta(days=29):
        # The default window would start before year 1 (OverflowError, a 500).
        raise ApiError(400, "invalid_parameter", "end is too early; give start too.", "end")
    start_day = start or end_day - timedelta(days=29)
    if start_day > end_day:
        raise ApiError(400, "invalid_parameter", "start is after end.", "start")
    if (end_day - start_day).days > 366:
        raise ApiError(400, "invalid_parameter", "At most 366 days at once.", "start")
    tokens = {
        name: Coalesce(Sum(Cast(KeyTextTransform(name, "usage"), IntegerField())), 0)
        for name in ("prompt_tokens", "completion_tokens", "images")
    }
    # Seconds of video and audio made (a float in the job's usage); not money, so float is fine.
    tokens["seconds"] = Coalesce(Sum(Cast(KeyTextTransform("seconds", "usage"), FloatField())), 0.0)
    rows = (
        Job.objects.filter(
            user=request.api_key.user,
            status__in=Job.TERMINAL,
            created__date__gte=start_day,
            created__date__lte=end_day,
        )
        .annotate(day=TruncDate("created"))
        .values("day", "model_slug")
        .annotate(requests=Count("id"), cost=Coalesce(Sum("cost"), Decimal(0)), **tokens)
        .order_by("day", "model_slug")
    )
    data = [
        {
            "date": row["day"].isoformat(),
            "model": row["model_slug"],
            "requests": row["requests"],
            "prompt_tokens": row["prompt_tokens"],
            "completion_tokens": row["completion_tokens"],
            "images": row["images"],
            "seconds": round(row["seconds"], 3),
            "cost": ledger.fmt(row["cost"]),
        }
        for row in rows
    ]
    total = sum((Decimal(d["cost"]) for d in data), Decimal(0))
    return {
        "object": "usage",
        "start": start_day.isoformat(),
        "end": end_day.isoformat(),
        "data": data,
        "total": {"requests": sum(d["requests"] for d in data), "cost": ledger.fmt(total)},
    }
