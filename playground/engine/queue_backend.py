"""Runs jobs on a remote queue-style API: another Playground, or a service with its protocol.

Submit `POST {base}/generate-<modality>` with the remote model id and the parameters → a
`request_id`; follow `GET {base}/requests/{id}` with backoff, relaying the remote's progress,
text and queue position as events; on success the remote's output document becomes this job's
output (passed through: keys this backend does not know are kept as they are). A job canceled
here (or past its time limit) is canceled there with `POST {base}/requests/{id}/cancel`.
Remote failures map onto this Playground's error codes.
"""

import base64
import time
import uuid
from typing import Any

import httpx

from .base import BackendError, Canceled, Emitter, Result, api_key_from_env

# Seconds between polls while the remote job changes. Each poll counts against the remote key's
# read budget (a Playground's pro tier: 6,000 a minute), so give that key a generous tier.
POLL_MIN = 0.2
POLL_MAX = 2.0  # ... backing off to this while it does not
BACKOFF_CAP = 5.0  # most we honour of a remote's Retry-After
ERROR_TEXT_LIMIT = 500
# The remote's status document keys that describe the job, not its output.
ENVELOPE = frozenset(
    {"request_id", "model", "status", "created", "progress", "queue_position", "cost", "error"}
)
# Remote error codes that mean the same here; anything else is the remote's failure.
PASSED_CODES = frozenset({"upstream_timeout", "time_limit"})
# Media inputs up to this size go inline as data: URIs (a third larger in base64, well under a
# Playground's 1 MiB JSON body limit); larger ones are uploaded to the remote first.
INLINE_INPUT_BYTES = 512 * 1024
TERMINAL = frozenset({"success", "complete", "failed", "canceled"})


class _Transient(Exception):
    """A request that failed in a way worth trying again (network, 429, 5xx)."""

    def __init__(self, message: str, retry_after: float = 0.0, busy: bool = False):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.busy = busy  # a 429: the remote is there, only asking us to slow down


class QueueBackend:
    """The `playground` backend: config base_url (with /v1), upstream_model, api_key_env,
    modality, and optional timeout (seconds per HTTP request, and longest the remote may stay
    unreachable while we follow a job), retries (of the submit), poll_min, poll_max."""

    def __init__(self, config: dict[str, Any]):
        self.base_url = str(config["base_url"]).rstrip("/")
        self.model = config["upstream_model"]
        self.modality = config.get("modality", "text")
        self.api_key_env = config.get("api_key_env") or None
        self.timeout = float(config.get("timeout") or 60)
        self.retries = max(0, int(config.get("retries", 3)))
        self.poll_min = float(config.get("poll_min", POLL_MIN))
        self.poll_max = max(self.poll_min, float(config.get("poll_max", POLL_MAX)))
        self._secrets: list[str] = []

    def run(self, params: dict[str, Any], emit: Emitter) -> Result:
        key = self._api_key()
        self._secrets = [key] if key else []
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        t = self.timeout
        timeout = httpx.Timeout(connect=t, read=t, write=t, pool=t)
        with httpx.Client(timeout=timeout, headers=headers) as client:
            request_id = self._submit(client, params, emit)
            try:
                document = self._follow(client, request_id, emit)
            except BaseException:
                # Canceled here, out of time (ours or Celery's soft limit), or gave up on the
                # remote: it must not keep working (and charging) for nobody.
                self._cancel_remote(client, request_id)
                raise
        return self._result(document, params)

    def _api_key(self) -> str | None:
        return api_key_from_env(self.api_key_env)

    def _submit(self, client: httpx.Client, params: dict[str, Any], emit: Emitter) -> str:
        # Unset parameters are left out: the remote applies its own defaults.
        body = {k: v for k, v in params.items() if v is not None} | {"model": self.model}
        body |= self._media_inputs(client, params)
        # One key for every attempt: a retried submit that had reached the remote gives the
        # same remote job, never a second one.
        headers = {"Idempotency-Key": f"pg-{uuid.uuid4()}"}
        url = f"{self.base_url}/generate-{self.modality}"
        last = None
        for attempt in range(self.retries + 1):
            if emit.canceled():
                raise Canceled()
            try:
                response = self._request(client, "POST", url, json=body, headers=headers)
            except _Transient as exc:
                last = exc
                if attempt < self.retries:
                    delay = max(min(0.2 * 2**attempt, 2.0), min(exc.retry_after, BACKOFF_CAP))
                    emit.log(self._clean(f"{exc.message}; retrying in {delay:.1f} s"))
                    _sleep(delay, emit)
                continue
            request_id = _json(response).get("request_id")
            if not isinstance(request_id, str) or not request_id:
                raise BackendError("upstream_error", "the remote sent no request_id")
            return request_id
        attempts = self.retries + 1
        suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
        code = "upstream_timeout" if "timed out" in last.message else "upstream_error"
        raise BackendError(code, self._clean(last.message + suffix))

    def _media_inputs(self, client: httpx.Client, params: dict[str, Any]) -> dict[str, str]:
        """Media inputs as the remote takes them: the params hold refs of files stored here,
        which mean nothing there. A small file goes as a `data:` URI; a larger one would not
        fit the remote's JSON body limit, so it is uploaded there (POST /files) and sent by id."""
        from .. import inputs, media
        from ..schemas import params_class

        try:
            fields = inputs.media_fields(params_class(self.modality, 1))
        except ValueError:
            return {}
        sent = {}
        for name in fields:
            value = params.get(name)
            if not isinstance(value, str) or value.startswith("data:"):
                continue
            stored = media.file_for_ref(value)
            try:
                if stored is None:
                    raise FileNotFoundError(value)
                data = media.read_file(stored)
            except FileNotFoundError:
                raise BackendError(
                    "invalid_input", f"{name}: the input file is no longer available."
                ) from None
            if len(data) <= INLINE_INPUT_BYTES:
                encoded = base64.b64encode(data).decode("ascii")
                sent[name] = f"data:{stored.content_type};base64,{encoded}"
            else:
                sent[name] = self._upload(client, stored.filename, stored.content_type, data)
        return sent

    def _upload(self, client: httpx.Client, filename: str, content_type: str, data: bytes) -> str:
        files = {"file": (filename, data, content_type)}
        try:
            response = self._request(
                client, "POST", f"{self.base_url}/files", files=files, data={"purpose": "input"}
            )
        except _Transient as exc:
            raise BackendError("upstream_error", self._clean(exc.message)) from None
        file_id = _json(response).get("id")
        if not isinstance(file_id, str) or not file_id:
            raise BackendError("upstream_error", "the remote sent no file id for an input")
        return file_id

    def _follow(self, client: httpx.Client, request_id: str, emit: Emitter) -> dict[str, Any]:
        url = f"{self.base_url}/requests/{request_id}"
        text_seen = ""
        progress = None
        position = None
        status = None
        delay = self.poll_min
        reachable_at = time.monotonic()
        while True:
            if emit.canceled():
                raise Canceled()
            try:
                document = _json(self._request(client, "GET", url))
            except _Transient as exc:
                if exc.busy:
                    reachable_at = time.monotonic()
                if time.monotonic() - reachable_at > self.timeout:
                    raise BackendError(
                        "upstream_timeout",
                        self._clean(
                            f"the remote did not answer for {self.timeout:g} s: {exc.message}"
                        ),
                    ) from None
                _sleep(max(delay, min(exc.retry_after, BACKOFF_CAP)), emit)
                delay = min(delay * 2, self.poll_max)
                continue
            reachable_at = time.monotonic()
            changed = False
            if document.get("status") != status:
                status, changed = document.get("status"), True
            if status == "pending" and document.get("queue_position") != position:
                position = document.get("queue_position")
                if isinstance(position, int):
                    emit.log(f"waiting in the remote queue, position {position}")
            text = document.get("text")
            if isinstance(text, str) and text.startswith(text_seen) and len(text) > len(text_seen):
                emit.delta(text[len(text_seen) :])
                text_seen, changed = text, True
            value = document.get("progress")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if value != progress and status not in TERMINAL:
                    emit.progress(value)
                    progress, changed = value, True
            if status in TERMINAL:
                return document
            # Quick polls while the remote job moves, backing off while it does not.
            delay = self.poll_min if changed else min(delay * 1.5, self.poll_max)
            _sleep(delay, emit)

    def _result(self, document: dict[str, Any], params: dict[str, Any] | None = None) -> Result:
        status = document.get("status")
        if status == "canceled":
            raise BackendError("upstream_error", "the remote canceled the job")
        if status == "failed":
            error = document.get("error") if isinstance(document.get("error"), dict) else {}
            code = error.get("code") if error.get("code") in PASSED_CODES else "upstream_error"
            message = str(error.get("message") or "no reason given")[:ERROR_TEXT_LIMIT]
            raise BackendError(code, self._clean(f"the remote job failed: {message}"))
        output = {k: v for k, v in document.items() if k not in ENVELOPE and k != "usage"}
        usage = document.get("usage") if isinstance(document.get("usage"), dict) else {}
        usage = {k: v for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool)}
        usage |= _media_usage(self.modality, output, params or {})
        return Result(output=output, usage=usage)

    def _cancel_remote(self, client: httpx.Client, request_id: str) -> None:
        try:
            client.post(f"{self.base_url}/requests/{request_id}/cancel", timeout=10)
        except httpx.HTTPError:
            pass  # the remote's own time limits end it

    def _request(self, client: httpx.Client, method: str, url: str, **kwargs) -> httpx.Response:
        """One request; raises _Transient (worth retrying) or BackendError (not)."""
        try:
            response = client.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise _Transient(f"the remote timed out after {self.timeout:g} s") from None
        except httpx.TransportError as exc:
            raise _Transient(f"could not reach the remote: {type(exc).__name__}") from None
        if response.is_success:
            return response
        detail = _error_text(response)
        message = f"the remote returned HTTP {response.status_code}" + (
            f": {detail}" if detail else ""
        )
        if response.status_code == 429 or response.status_code >= 500:
            raise _Transient(message, _retry_after(response), busy=response.status_code == 429)
        if response.status_code in (401, 403):
            message = f"the remote refused our API key (HTTP {response.status_code})"
        raise BackendError("upstream_error", self._clean(message))

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _media_usage(modality: str, output: dict[str, Any], params: dict[str, Any]) -> dict:
    """What a media job is billed for, from the remote's output: a Playground's status document
    carries `usage` for text and embedding jobs only. The runner caps the charge at the hold."""
    if modality == "image":
        images = output.get("images")
        return {"images": len(images) if isinstance(images, list) else 0}
    if modality == "video":
        video = output.get("video") if isinstance(output.get("video"), dict) else {}
        seconds = _number(video.get("duration"))
        if seconds is None:
            frames = _number(video.get("num_frames", params.get("num_frames")))
            fps = _number(video.get("fps", params.get("fps")))
            seconds = frames / fps if frames is not None and fps else 0
        return {"seconds": round(seconds, 3)}
    if modality == "audio":
        seconds = _number(output.get("duration"))
        if seconds is None:
            seconds = _number(params.get("duration")) or 0
        return {"seconds": round(seconds, 3)}
    return {}


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise BackendError("upstream_error", "the remote's response is not JSON") from None
    if not isinstance(data, dict):
        raise BackendError("upstream_error", "the remote sent an unexpected response")
    return data


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    if isinstance(error, dict):
        message = error.get("message") or ""
        if error.get("param"):
            message = f"{message} (param {error['param']})"
        error = message
    return error[:ERROR_TEXT_LIMIT] if isinstance(error, str) else ""


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return 0.0


def _sleep(seconds: float, emit: Emitter) -> None:
    """Sleep in slices, so a cancel (or the soft time limit) is seen within 50 ms."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if emit.canceled():
            raise Canceled()
        time.sleep(min(left, 0.05))
