"""Webhooks: a job's events POSTed to the submitter's URL, signed (Standard Webhooks), retried.

Rules, all here: which URLs are allowed (https, public addresses, unless the operator allows a
host), how a delivery is signed, the throttle (at most one delivery per job every THROTTLE
seconds; `output` and `logs` coalesce), retries with exponential backoff, and the record of
every attempt. docs/webhooks.md is the user's side of it.
"""

import base64
import hashlib
import hmac
import json
import logging
import secrets
import socket
import time
import uuid
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from .errors import ApiError
from .inputs import is_public_address, pinned_request
from .models import Job, WebhookDelivery, WebhookSecret

log = logging.getLogger(__name__)
EVENTS = ("start", "output", "logs", "completed")
DEFAULT_EVENTS = ["completed"]
THROTTLE = 0.5  # seconds between two deliveries of one job
TOLERANCE = 300  # seconds: receivers reject older timestamps (replay protection)
MAX_URL = 2000
MAX_LOG_LINES = 1000
STATE_TTL = 3600


# --- Which URLs may receive webhooks -------------------------------------------------------


def _allowed_host(host: str) -> bool:
    return host.lower().strip("[]") in settings.PLAYGROUND_WEBHOOK_ALLOW_HOSTS


def check_url(url, param: str = "webhook_url") -> str:
    """The URL if webhooks may go there; ApiError 400 naming `param` otherwise.

    https only, and every address the host resolves to must be public (no private, loopback,
    link-local or reserved ranges), unless the host is in PLAYGROUND_WEBHOOK_ALLOW_HOSTS.
    """
    return checked_address(url, param)[0]


def checked_address(url, param: str = "webhook_url") -> tuple[str, str | None]:
    """(url, the checked address a delivery connects to; None for an allowed host)."""

    def bad(message: str) -> ApiError:
        return ApiError(400, "invalid_webhook_url", f"{param}: {message}", param)

    if not isinstance(url, str) or not url:
        raise bad("a URL is required.")
    if len(url) > MAX_URL:
        raise bad(f"at most {MAX_URL} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise bad("not a valid URL.") from None
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise bad("must be an https:// URL.")
    allowed = _allowed_host(host)
    if parts.scheme == "http" and not allowed:
        raise bad("must be an https:// URL.")
    if allowed:
        return url, None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise bad(f"the host {host!r} does not resolve.") from None
    if not infos or not all(is_public_address(info[4][0]) for info in infos):
        raise bad("private, loopback and link-local addresses are not allowed.")
    return url, infos[0][4][0]


def from_body(data: dict) -> tuple[str, list[str]] | None:
    """Pop `webhook_url` and `webhook_events_filter` off a submit body: (url, events) or None."""
    url = data.pop("webhook_url", None)
    events = data.pop("webhook_events_filter", None)
    if url is None:
        if events is not None:
            raise ApiError(
                400,
                "invalid_parameter",
                "webhook_events_filter needs a webhook_url.",
                "webhook_events_filter",
            )
        return None
    url = check_url(url)
    if events is None:
        return url, list(DEFAULT_EVENTS)
    if (
        not isinstance(events, list)
        or not events
        or not all(isinstance(e, str) and e in EVENTS for e in events)
    ):
        raise ApiError(
            400,
            "invalid_parameter",
            f"webhook_events_filter must be a non-empty list of {', '.join(EVENTS)}.",
            "webhook_events_filter",
        )
    return url, [e for e in EVENTS if e in events]


# --- Signing ---------------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_for(user) -> str:
    """The account's signing secret, made on first use."""
    record, _ = WebhookSecret.objects.get_or_create(user=user, defaults={"secret": new_secret()})
    return record.secret


def rotate_secret(user) -> str:
    secret = new_secret()
    WebhookSecret.objects.update_or_create(
        user=user, defaults={"secret": secret, "created": timezone.now()}
    )
    return secret


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` over `id.timestamp.body`, keyed by the secret's decoded bytes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify(secret: str, headers, body: bytes, now: float | None = None) -> bool:
    """What a receiver does (docs/webhooks.md): signature matches, timestamp within 5 minutes."""
    try:
        message_id = headers["webhook-id"]
        timestamp = int(headers["webhook-timestamp"])
        signatures = headers["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > TOLERANCE:
        return False
    expected = sign(secret, message_id, timestamp, body)
    return any(hmac.compare_digest(expected, s) for s in signatures)


# --- Scheduling, with the throttle ---------------------------------------------------------


def _last_key(request_id) -> str:
    return f"pg:wh:last:{request_id}"


def _logs_key(request_id) -> str:
    return f"pg:wh:logs:{request_id}"


def _schedule(job: Job, event: str, delay: float) -> None:
    from .engine import registry
    from .engine.tasks import deliver_webhook

    message_id = f"msg_{uuid.uuid4().hex}"
    try:
        deliver_webhook.apply_async(
            args=[job.pk, event, message_id], countdown=max(0.0, delay), queue=registry.WEBHOOKS
        )
    except Exception:
        # A webhook never breaks the job it reports on.
        log.exception("could not queue the %s webhook of job %s", event, job.request_id)


class JobHooks:
    """A running job's `start`, `output` and `logs` webhooks, in the engine's emitter.

    A delivery carries the job's state when it is sent, so events that come while one is
    already scheduled are folded into it: at most one delivery per THROTTLE seconds.
    """

    def __init__(self, job: Job):
        self.job = job
        self.events = set(job.webhook_events or DEFAULT_EVENTS)
        self.scheduled_at = -1.0  # when the latest scheduled delivery goes out
        self.logs: list[str] = []

    def fire(self, event: str) -> None:
        if event not in self.events:
            return
        now = time.time()
        if now < self.scheduled_at:
            return  # the delivery on its way will carry this state too
        send_at = max(now, self.scheduled_at + THROTTLE)
        self.scheduled_at = send_at
        cache.set(_last_key(self.job.request_id), send_at, STATE_TTL)
        _schedule(self.job, event, send_at - now)

    def log(self, message: str) -> None:
        if "logs" not in self.events:
            return
        self.logs.append(message)
        del self.logs[:-MAX_LOG_LINES]
        cache.set(_logs_key(self.job.request_id), self.logs, STATE_TTL)
        self.fire("logs")


def job_completed(job: Job) -> None:
    """Schedule the `completed` webhook of a job that just reached a terminal state."""
    if not job.webhook_url or "completed" not in (job.webhook_events or DEFAULT_EVENTS):
        return
    now = time.time()
    last = cache.get(_last_key(job.request_id))
    send_at = now if last is None else max(now, last + THROTTLE)
    cache.set(_last_key(job.request_id), send_at, STATE_TTL)
    _schedule(job, "completed", send_at - now)


# --- Delivery --------------------------------------------------------------------------------


def payload(job: Job, event: str) -> bytes:
    """The body: `{"type", "timestamp", "data": <status document>}` (Standard Webhooks)."""
    from .jobs import status_document

    data = status_document(job)
    logs = cache.get(_logs_key(job.request_id))
    if logs:
        data["logs"] = "\n".join(logs)
    body = {"type": event, "timestamp": timezone.now().isoformat(), "data": data}
    return json.dumps(body, separators=(",", ":")).encode()


def backoff(attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: base, 2×base, 4×base, … at most an hour."""
    return min(3600.0, settings.PLAYGROUND_WEBHOOK_RETRY_SECONDS * 2 ** (attempt - 1))


def _wait_for_throttle(job: Job) -> None:
    """Hold a delivery that would come within THROTTLE of the job's previous one."""
    key = f"pg:wh:sent:{job.request_id}"
    last = cache.get(key)
    if last is not None:
        wait = last + THROTTLE - time.time()
        if 0 < wait <= THROTTLE:
            time.sleep(wait)
    cache.set(key, time.time(), STATE_TTL)


def deliver(job_id: int, event: str, message_id: str, attempt: int = 1, body: str | None = None):
    """One attempt; records it and, on failure, schedules the next one with backoff."""
    job = Job.objects.select_related("user").filter(pk=job_id).first()
    if job is None or not job.webhook_url:
        return
    if body is None:
        events = job.webhook_events or DEFAULT_EVENTS
        if event in ("output", "logs") and job.is_terminal and "completed" in events:
            return  # overtaken by the job's end: the `completed` delivery carries it all
        body = payload(job, event).decode()
    url = job.webhook_url
    record = WebhookDelivery(job=job, message_id=message_id, event=event, url=url, attempt=attempt)
    retry = True
    started = time.perf_counter()
    try:
        _, address = checked_address(url)
    except ApiError:
        record.error = "the URL now resolves to an address that is not allowed"
        retry = False
    else:
        secret = secret_for(job.user)
        _wait_for_throttle(job)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "Playground-Webhooks/1",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, message_id, timestamp, body.encode()),
        }
        started = time.perf_counter()
        try:
            record.status_code = _post(url, address, body.encode(), headers)
        except httpx.TimeoutException:
            record.error = f"no answer within {settings.PLAYGROUND_WEBHOOK_TIMEOUT} s"
        except httpx.HTTPError as exc:
            record.error = f"connection failed: {type(exc).__name__}"[:300]
    record.duration_ms = round((time.perf_counter() - started) * 1000, 1)
    record.save()
    if record.ok or not retry or attempt >= settings.PLAYGROUND_WEBHOOK_MAX_ATTEMPTS:
        return
    from .engine import registry
    from .engine.tasks import deliver_webhook

    try:
        deliver_webhook.apply_async(
            args=[job.pk, event, message_id, attempt + 1, body],
            countdown=backoff(attempt),
            queue=registry.WEBHOOKS,
        )
    except Exception:
        log.exception("could not queue a webhook retry for job %s", job.request_id)


def _post(url: str, address: str | None, content: bytes, headers: dict) -> int:
    """POST to the address that was checked (None: an allowed host, by its name), never via
    a proxy from the environment; a client per delivery, as pinned_request asks."""
    timeout = settings.PLAYGROUND_WEBHOOK_TIMEOUT
    with httpx.Client(
        timeout=timeout, verify=_ssl_context(), trust_env=False, follow_redirects=False
    ) as client:
        if address is None:
            request = client.build_request("POST", url, content=content, headers=headers)
        else:
            request = pinned_request(client, "POST", url, address, content=content, headers=headers)
        return client.send(request).status_code


_ssl = None


def _ssl_context():
    # Made once: loading the CA bundle costs about 100 ms of CPU.
    global _ssl
    if _ssl is None:
        _ssl = httpx.create_ssl_context()
    return _ssl


def delivery_document(d: WebhookDelivery) -> dict:
    return {
        "id": d.message_id,
        "event": d.event,
        "url": d.url,
        "attempt": d.attempt,
        "status_code": d.status_code,
        "ok": d.ok,
        "duration_ms": d.duration_ms,
        "error": d.error or None,
        "created": int(d.created.timestamp()),
    }


def deliveries_for(job: Job) -> list[WebhookDelivery]:
    return list(job.webhook_deliveries.order_by("created", "id"))
