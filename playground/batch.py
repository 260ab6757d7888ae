"""POST /v1/batch/completions: many prompts, one model, shared parameters; one job per prompt.

Each item is an ordinary job (held, billed, in history, cancelable). Items that cannot be
submitted (bad parameters, not enough credits) get an error in their place and no job. Small
batches may wait for their results; any batch can be polled with GET /v1/batch/{id}.
"""

import asyncio
import uuid

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.http import JsonResponse

from . import jobs, ratelimit, webhooks
from .api import api, bearer, parse_body, resolve_model, wait_until_done
from .errors import ApiError
from .models import Batch, Job

MAX_ITEMS = 500
MAX_WAIT_ITEMS = 32  # larger batches are answered at once and polled
ENVELOPE = ("model", "prompts", "wait_for_result")


def _submit(key, data: dict) -> tuple[Batch, bool]:
    prompts = data.get("prompts")
    if not isinstance(prompts, list) or not 1 <= len(prompts) <= MAX_ITEMS:
        raise ApiError(
            400, "invalid_parameter", f"prompts must be a list of 1 to {MAX_ITEMS}.", "prompts"
        )
    wait = data.get("wait_for_result", False)
    if not isinstance(wait, bool):
        raise ApiError(
            400, "invalid_parameter", "wait_for_result must be a boolean.", "wait_for_result"
        )
    model = resolve_model(key, data.get("model"), "text")
    shared = {k: v for k, v in data.items() if k not in ENVELOPE}
    if "prompt" in shared or "messages" in shared:
        param = "prompt" if "prompt" in shared else "messages"
        raise ApiError(400, "invalid_parameter", "Give prompts, a list, instead.", param)
    webhook = webhooks.from_body(shared)
    batch = Batch.objects.create(user=key.user, model_slug=model.slug, size=len(prompts))
    errors = {}
    for index, prompt in enumerate(prompts):
        item = {"messages": prompt} if isinstance(prompt, list) else {"prompt": prompt}
        try:
            params = jobs.validate_params(model, {**shared, **item})
            jobs.submit_job(
                key.user,
                model,
                params,
                api_key=key,
                webhook=webhook,
                extra={"batch": batch, "batch_index": index},
            )
        except ApiError as exc:
            head, _, rest = (exc.param or "").partition(".")
            if head in ("prompt", "messages"):
                exc.param = f"prompts.{index}" + (f".{rest}" if rest else "")
            errors[str(index)] = {"code": exc.code, "message": exc.message, "param": exc.param}
    if errors:
        Batch.objects.filter(pk=batch.pk).update(errors=errors)
        batch.errors = errors
    return batch, wait and len(prompts) <= MAX_WAIT_ITEMS


def _items(batch: Batch) -> list[Job]:
    return list(batch.jobs.select_related("model").order_by("batch_index"))


def document(batch: Batch, items: list[Job] | None = None) -> dict:
    """The batch: its status, counts and one entry per prompt, in order."""
    items = _items(batch) if items is None else items
    by_index = {job.batch_index: job for job in items}
    data, counts = [], dict.fromkeys(("pending", "running", "success", "failed", "canceled"), 0)
    for index in range(batch.size):
        job = by_index.get(index)
        if job is None:
            error = batch.errors.get(str(index)) or {
                "code": "not_submitted",
                "message": "This item was not submitted.",
                "param": None,
            }
            data.append({"index": index, "request_id": None, "status": "failed", "error": error})
            counts["failed"] += 1
            continue
        data.append({"index": index, **jobs.status_document(job)})
        counts[job.status] += 1
    if counts["pending"] + counts["running"] == 0:
        status = "completed"
    else:
        status = "running" if counts["running"] or counts["success"] else "pending"
    return {
        "id": str(batch.public_id),
        "object": "batch",
        "model": batch.model_slug,
        "status": status,
        "created": int(batch.created.timestamp()),
        "counts": {"total": batch.size, **counts},
        "data": data,
    }


def get_batch_for_user(user, batch_id) -> Batch:
    """The user's batch; 404 for an unknown id and another user's batch alike."""
    try:
        return Batch.objects.get(public_id=uuid.UUID(str(batch_id)), user=user)
    except (Batch.DoesNotExist, ValueError):
        raise ApiError(404, "batch_not_found", "No such batch.", "batch_id") from None


@api.post(
    "/batch/completions",
    auth=bearer,
    tags=["batch"],
    summary="Run a list of prompts as one batch of jobs",
    description=(
        'Body `{"model": id, "prompts": [text or messages, …], …shared parameters}`: one job per '
        f"prompt (at most {MAX_ITEMS}), each held, billed, listed and counted against the "
        "submit rate budget like any other. With "
        f'`"wait_for_result": true` and at most {MAX_WAIT_ITEMS} prompts the answer holds every '
        "result in order (202 if the wait ended first); otherwise it comes at once and "
        "`GET /v1/batch/{id}` gives the same document. Items that cannot be submitted carry an "
        "`error` in their place."
    ),
)
async def batch_completions(request):
    data = parse_body(request)
    prompts = data.get("prompts")
    if isinstance(prompts, list) and 1 < len(prompts) <= MAX_ITEMS:
        # Each prompt is a submit for the rate budget; the request itself counted one.
        request.rate_headers = await sync_to_async(ratelimit.hit)(
            request.api_key, "submit", len(prompts) - 1
        )
    batch, wait = await sync_to_async(_submit)(request.api_key, data)
    items = await sync_to_async(_items)(batch)
    if wait:
        timeout = settings.PLAYGROUND_WAIT_SECONDS
        finished = await asyncio.gather(*(wait_until_done(job, timeout) for job in items))
        items = [job for job, _ in finished]
    doc = await sync_to_async(document)(batch, items)
    done = doc["status"] == "completed"
    return JsonResponse(doc, status=200 if done or not wait else 202)


@api.get("/batch/{batch_id}", auth=bearer, tags=["batch"], summary="Get a batch and its results")
def get_batch(request, batch_id: str):
    batch = get_batch_for_user(request.api_key.user, batch_id)
    return document(batch)


@api.post("/batch/{batch_id}/cancel", auth=bearer, tags=["batch"], summary="Cancel a batch")
def cancel_batch(request, batch_id: str):
    batch = get_batch_for_user(request.api_key.user, batch_id)
    for job in batch.jobs.filter(status__in=[Job.PENDING, Job.RUNNING]).select_related("model"):
        with transaction.atomic():
            jobs.cancel_job(job)
    return document(batch)
