"""OpenAI-compatible endpoints (CONTRACT §5): chat, completions and embeddings, run as jobs.

A response's `id` is the job's `request_id`; `usage` carries `cost`. With `stream: true` the
answer is server-sent events relayed from the job's events, `data: [DONE]` last.
"""

import asyncio
import base64
import copy
import json
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.http import JsonResponse, StreamingHttpResponse

from billing import ledger

from . import jobs, webhooks
from .api import api, bearer, parse_body, resolve_model, wait_until_done
from .engine import events, registry, runner
from .errors import ApiError
from .models import Job
from .sqlite.base import keep_connections_open

# OpenAI parameters accepted and ignored: they do not change what our models do.
IGNORED = {"user", "presence_penalty", "frequency_penalty", "logprobs", "store", "metadata"}
_running: set = set()  # inline jobs started by streams
# How much longer than PLAYGROUND_UPSTREAM_TIMEOUT a request waits for its job's result.
WAIT_MARGIN = 60
TIMED_OUT = "The model did not finish in time. Nothing was charged."
STATUS_FOR_CODE = {"upstream_error": 502, "upstream_timeout": 504, "engine_unavailable": 503}


def _params(key, data: dict, chat: bool) -> tuple[object, dict, bool, bool]:
    """(model, job params, stream, include_usage) from an OpenAI-style body."""
    data = {k: v for k, v in data.items() if k not in IGNORED}
    stream = data.pop("stream", False)
    options = data.pop("stream_options", None) or {}
    if not isinstance(stream, bool):
        raise ApiError(400, "invalid_parameter", "stream must be a boolean.", "stream")
    if not isinstance(options, dict):
        raise ApiError(
            400, "invalid_parameter", "stream_options must be an object.", "stream_options"
        )
    n = data.pop("n", 1)
    if n != 1:
        raise ApiError(400, "invalid_parameter", "Only n=1 is supported.", "n")
    if "max_completion_tokens" in data:
        data["max_tokens"] = data.pop("max_completion_tokens")
    model = resolve_model(key, data.pop("model", None), "text")
    if chat and "messages" not in data:
        raise ApiError(400, "invalid_parameter", "messages is required.", "messages")
    if not chat:
        if "messages" in data:
            raise ApiError(400, "invalid_parameter", "use prompt, not messages.", "messages")
        if isinstance(data.get("prompt"), list):
            if len(data["prompt"]) != 1:
                raise ApiError(400, "invalid_parameter", "One prompt per request.", "prompt")
            data["prompt"] = data["prompt"][0]
    return model, data, stream, bool(options.get("include_usage"))


def _inline(model) -> bool:
    """Upstream jobs run in this process (PLAYGROUND_INLINE_UPSTREAM): the client waits here."""
    return settings.PLAYGROUND_INLINE_UPSTREAM and model.backend == "openai"


def _submit(key, data: dict, chat: bool):
    """(job, stream, include_usage, run_here); a non-streaming inline job is finished already."""
    model, data, stream, include_usage = _params(key, data, chat)
    webhook = webhooks.from_body(data)
    params = jobs.validate_params(model, data)
    inline = _inline(model)
    job = jobs.submit_job(
        key.user,
        model,
        params,
        api_key=key,
        webhook=webhook,
        enqueue=not inline,
        start=inline and not stream,
    )
    if inline and not stream:
        runner.execute(job)
    return job, stream, include_usage, inline and stream


def _usage(job: Job) -> dict:
    usage = {k: job.usage.get(k, 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return {**usage, "cost": ledger.fmt(job.cost or 0)}


def _wait_limit() -> float:
    return settings.PLAYGROUND_UPSTREAM_TIMEOUT + WAIT_MARGIN


def _raise_if_failed(job: Job) -> None:
    if not job.is_terminal:
        # Gave up waiting: the job stops, so nobody is charged for output nobody received.
        job = jobs.cancel_job(job)
        if not job.is_terminal or job.status == Job.CANCELED:
            raise ApiError(504, "upstream_timeout", TIMED_OUT)
    if job.status == Job.FAILED:
        status = STATUS_FOR_CODE.get(job.error_code, 500)
        raise ApiError(status, job.error_code or "internal_error", job.error_message)
    if job.status == Job.CANCELED:
        raise ApiError(409, "canceled", "The request was canceled.")


async def _raise_unless_succeeded(job: Job) -> None:
    if job.status != Job.SUCCESS:  # a job that succeeded needs no thread hop for this
        await sync_to_async(_raise_if_failed)(job)


def _completion(job: Job, chat: bool) -> dict:
    text = job.output.get("text", "")
    finish = job.output.get("finish_reason", "stop")
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}}
    else:
        choice = {"index": 0, "text": text, "logprobs": None}
    return {
        "id": str(job.request_id),
        "object": "chat.completion" if chat else "text_completion",
        "created": int(job.created.timestamp()),
        "model": job.model_slug,
        "choices": [{**choice, "finish_reason": finish}],
        "usage": _usage(job),
    }


def _chunk(job: Job, chat: bool, text: str | None, finish: str | None, first=False) -> dict:
    if chat:
        delta = {"role": "assistant", "content": text or ""} if first else {}
        if text and not first:
            delta["content"] = text
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
    return {
        "id": str(job.request_id),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(job.created.timestamp()),
        "model": job.model_slug,
        "choices": [choice],
    }


def _sse(payload) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


async def _stream(job: Job, chat: bool, include_usage: bool, run_here: bool = False):
    """Relay the job's events as SSE; a client that goes away cancels the job."""
    finished = timed_out = False
    delivered = 0  # completion tokens sent to the client
    try:
        async with events.JobListener(job.request_id) as listener:
            if run_here:
                # Our own job, not started yet: nothing to take a snapshot of. Started once
                # subscribed, so no event is missed; a cancel stops it as usual.
                seq, text, delivered = 0, "", 0
                # The runner's own copy: it moves its job to a terminal state while this loop
                # still has events to relay, and this loop decides by its job's status.
                run = sync_to_async(_run_detached, thread_sensitive=False, executor=_executor())
                task = asyncio.ensure_future(run(copy.copy(job)))
                _running.add(task)  # the loop keeps only weak references to tasks
                task.add_done_callback(_running.discard)
            else:
                # As the websocket does: join first, then the snapshot and its sequence number.
                job, seq, text, delivered = await sync_to_async(_snapshot)(job)
            yield _sse(_chunk(job, chat, text, None, first=True))
            deadline = time.monotonic() + _wait_limit()
            while not job.is_terminal and time.monotonic() < deadline:
                message = await listener.next(min(deadline - time.monotonic(), 5.0))
                if message is None:  # quiet for a while: look at the database
                    job = await sync_to_async(_reload)(job)
                    continue
                if message.get("seq", 0) <= seq:
                    continue
                seq = message["seq"]
                payload = message.get("payload", {})
                if payload.get("type") == "delta":
                    yield _sse(_chunk(job, chat, payload["text"], None))
                    delivered += 1
                elif payload.get("type") == "result":
                    job = await sync_to_async(_reload)(job)
        if not job.is_terminal:
            # Out of time: stop the job, charging only what this stream delivered (§8).
            job = await sync_to_async(_cancel)(job, delivered)
            timed_out = job.status == Job.CANCELED
        if job.status == Job.SUCCESS:
            finish = job.output.get("finish_reason", "stop")
            yield _sse(_chunk(job, chat, None, finish))
            if include_usage:
                last = _chunk(job, chat, None, None)
                last["choices"], last["usage"] = [], _usage(job)
                yield _sse(last)
        elif timed_out:
            message = "The model did not finish in time."
            error = {"code": "upstream_timeout", "message": message}
            yield _sse({"error": {**error, "type": "api_error", "param": None}})
        else:
            error = {"code": job.error_code or job.status, "message": job.error_message}
            yield _sse({"error": {**error, "type": "api_error", "param": None}})
        yield b"data: [DONE]\n\n"
        finished = True
    finally:
        if not finished:
            # The client went away mid-stream: stop the work, charge what it was sent.
            await sync_to_async(_cancel)(job, delivered)


@cache
def _executor() -> ThreadPoolExecutor:
    """The threads streamed inline jobs run on, PLAYGROUND_INLINE_STREAMS at most (asyncio's
    default executor, min(32, cores + 4) threads, ran six at once on two cores). Threads are
    reused; each keeps its SQLite connection, as the /v1 request threads do."""
    return ThreadPoolExecutor(
        max_workers=settings.PLAYGROUND_INLINE_STREAMS,
        thread_name_prefix="inline-stream",
        initializer=keep_connections_open,
    )


def _run_detached(job: Job) -> None:
    """Run a streamed inline job on a pool thread, then give its database connection back
    (to the pool; a kept SQLite connection stays)."""
    try:
        runner.run_job(job.pk, job)
    finally:
        close_old_connections()


def _snapshot(job: Job) -> tuple[Job, int, str, int]:
    """(job, seq, text so far, tokens so far) as the stream starts."""
    job.refresh_from_db()
    if job.is_terminal:
        return job, 2**62, job.output.get("text", ""), job.usage.get("completion_tokens", 0)
    live = events.live_state(job.request_id) or {}
    return job, live.get("seq", 0), live.get("text", ""), live.get("tokens", 0)


def _reload(job: Job) -> Job:
    job.refresh_from_db()
    return job


def _cancel(job: Job, delivered_tokens: int) -> Job:
    usage = None
    if delivered_tokens and job.model is not None:
        prompt = registry.prompt_tokens_estimate(job.model, job.params)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": delivered_tokens,
            "total_tokens": prompt + delivered_tokens,
        }
    return jobs.cancel_job(job, delivered=usage)


def _view(chat: bool):
    async def view(request):
        data = parse_body(request)
        job, stream, include_usage, run_here = await sync_to_async(_submit)(
            request.api_key, data, chat
        )
        if stream:
            response = StreamingHttpResponse(
                _stream(job, chat, include_usage, run_here), content_type="text/event-stream"
            )
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"
            return response
        if not job.is_terminal:
            job, _ = await wait_until_done(job, _wait_limit())
        await _raise_unless_succeeded(job)
        return JsonResponse(_completion(job, chat))

    view.__name__ = "chat_completions" if chat else "completions"
    return view


api.post(
    "/chat/completions",
    auth=bearer,
    tags=["openai"],
    summary="Chat completion (OpenAI-compatible)",
)(_view(chat=True))
api.post(
    "/completions",
    auth=bearer,
    tags=["openai"],
    summary="Text completion (OpenAI-compatible)",
)(_view(chat=False))


def _submit_embeddings(key, data: dict) -> Job:
    data = {k: v for k, v in data.items() if k not in IGNORED}
    model = resolve_model(key, data.pop("model", None), "embedding")
    webhook = webhooks.from_body(data)
    params = jobs.validate_params(model, data)
    return jobs.submit_job(key.user, model, params, api_key=key, webhook=webhook)


def _encode(vector: list[float], encoding: str):
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def _embeddings_document(job: Job) -> dict:
    encoding = job.params.get("encoding_format", "float")
    vectors = job.output.get("embeddings", [])
    prompt = job.usage.get("prompt_tokens", 0)
    return {
        "object": "list",
        "id": str(job.request_id),
        "model": job.model_slug,
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(v, encoding)}
            for i, v in enumerate(vectors)
        ],
        "usage": {
            "prompt_tokens": prompt,
            "total_tokens": job.usage.get("total_tokens", prompt),
            "cost": ledger.fmt(job.cost or 0),
        },
    }


@api.post(
    "/embeddings",
    auth=bearer,
    tags=["openai"],
    summary="Embeddings (OpenAI-compatible): a string or a list of strings",
)
async def embeddings(request):
    data = parse_body(request)
    job = await sync_to_async(_submit_embeddings)(request.api_key, data)
    job, _ = await wait_until_done(job, _wait_limit())
    await _raise_unless_succeeded(job)
    return JsonResponse(_embeddings_document(job))
