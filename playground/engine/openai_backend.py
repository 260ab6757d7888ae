"""Runs text jobs on any OpenAI-compatible upstream: vLLM, Ollama, llama.cpp, hosted APIs."""

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from playground.engine.base import BackendError, Canceled, Emitter, Result, api_key_from_env

DEFAULT_TIMEOUT = 60.0
BACKOFF_BASE = 0.2  # seconds before the first retry; doubled for each further one
BACKOFF_CAP = 2.0
# An upstream that wants us to wait longer than this is better reported than waited on.
RETRY_AFTER_CAP = 5.0
ERROR_TEXT_LIMIT = 500  # characters of the upstream's own error message passed on


class PartialOutput(BackendError):
    """A failure after output was delivered; carries that output so it can still be charged."""

    def __init__(self, code: str, message: str, text: str, usage: dict[str, int]):
        super().__init__(code, message)
        self.text = text
        self.usage = usage


class _Retryable(Exception):
    """An attempt that failed before any output, in a way worth trying again (429, 5xx, network)."""

    def __init__(self, error: BackendError, retry_after: float = 0.0):
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


class OpenAIBackend:
    """Streams chat or text completions from an OpenAI-compatible HTTP API."""

    def __init__(self, config: dict[str, Any]):
        self.base_url = str(config["base_url"]).rstrip("/")
        self.model = config["upstream_model"]
        self.api_key_env = config.get("api_key_env") or None
        timeout = config.get("timeout")
        self.timeout = float(timeout) if timeout is not None else _default_timeout()
        self.retries = max(0, int(config.get("retries", 2)))
        # Credentials in the URL are sent as basic auth by httpx; keep them out of messages too.
        self._url_password = httpx.URL(self.base_url).password

    def run(self, params: dict[str, Any], emit: Emitter) -> Result:
        """Runs one completion, streaming deltas to `emit`; raises BackendError or Canceled."""
        chat = params.get("messages") is not None
        body: dict[str, Any] = {
            "model": self.model,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if chat:
            body["messages"] = params["messages"]
        else:
            body["prompt"] = params["prompt"]
        for name in ("max_tokens", "temperature", "top_p", "seed"):
            if params.get(name) is not None:
                body[name] = params[name]
        if params.get("stop"):
            body["stop"] = params["stop"]
        url = self.base_url + ("/chat/completions" if chat else "/completions")
        prompt_words = _word_count(params)

        key = self._api_key()
        secrets = [s for s in (key, self._url_password) if s]
        try:
            with self._client(key, stream=True) as client:
                return self._with_retries(
                    lambda: self._stream(client, url, body, chat, prompt_words, emit),
                    emit,
                    secrets,
                )
        except BackendError as exc:
            _scrub(exc, secrets)
            raise

    def embed(self, inputs: list[str]) -> tuple[list[list[float]], dict[str, int]]:
        """Embeds `inputs`; returns one vector per input and the usage."""
        key = self._api_key()
        secrets = [s for s in (key, self._url_password) if s]
        body = {"model": self.model, "input": inputs}

        def attempt() -> tuple[list[list[float]], dict[str, int]]:
            try:
                response = client.post(self.base_url + "/embeddings", json=body)
                self._check_status(response)
                payload = response.json()
                data = sorted(payload["data"], key=lambda item: item.get("index", 0))
                vectors = [list(item["embedding"]) for item in data]
                upstream_usage = payload.get("usage")
            except httpx.HTTPError as exc:
                raise _transport_error(exc, self.timeout) from None
            except (ValueError, KeyError, TypeError, AttributeError):
                raise BackendError(
                    "upstream_error", "upstream sent a malformed embeddings response"
                ) from None
            if len(vectors) != len(inputs):
                raise BackendError(
                    "upstream_error", "upstream returned the wrong number of vectors"
                )
            prompt = _count(
                upstream_usage, "prompt_tokens", _word_count({"prompt": " ".join(inputs)})
            )
            return vectors, {
                "prompt_tokens": prompt,
                "total_tokens": _count(upstream_usage, "total_tokens", prompt),
            }

        try:
            with self._client(key, stream=False) as client:
                return self._with_retries(attempt, None, secrets)
        except BackendError as exc:
            _scrub(exc, secrets)
            raise

    def generate_images(self, body: dict[str, Any], emit: Emitter | None = None) -> dict:
        """POSTs `body` (with our upstream model name) to /images/generations; the JSON reply."""
        key = self._api_key()
        secrets = [s for s in (key, self._url_password) if s]
        body = {**body, "model": self.model}

        def attempt() -> dict:
            try:
                response = client.post(self.base_url + "/images/generations", json=body)
                self._check_status(response)
                payload = response.json()
            except httpx.HTTPError as exc:
                raise _transport_error(exc, self.timeout) from None
            except ValueError:
                raise BackendError("upstream_error", "upstream sent a malformed reply") from None
            if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
                raise BackendError("upstream_error", "upstream sent no images")
            return payload

        try:
            with self._client(key, stream=False) as client:
                return self._with_retries(attempt, emit, secrets)
        except BackendError as exc:
            _scrub(exc, secrets)
            raise

    def _api_key(self) -> str | None:
        return api_key_from_env(self.api_key_env)

    def _client(self, key: str | None, stream: bool) -> "_Session":
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return _Session(shared_client(self.timeout), headers)

    def _with_retries(self, attempt: Callable[[], Any], emit: Emitter | None, secrets: list[str]):
        for n in range(self.retries + 1):
            _check_canceled(emit)
            try:
                return attempt()
            except _Retryable as exc:
                last = exc.error
                if n == self.retries:
                    break
                backoff = min(BACKOFF_BASE * 2**n, BACKOFF_CAP)
                delay = max(backoff, min(exc.retry_after, RETRY_AFTER_CAP))
                if emit is not None:
                    emit.log(_scrub_text(f"{last.message}; retrying in {delay:.1f} s", secrets))
                _sleep(delay, emit)
        attempts = self.retries + 1
        message = last.message if attempts == 1 else f"{last.message} (after {attempts} attempts)"
        raise BackendError(last.code, message)

    def _stream(
        self,
        client: httpx.Client,
        url: str,
        body: dict[str, Any],
        chat: bool,
        prompt_words: int,
        emit: Emitter,
    ) -> Result:
        parts: list[str] = []
        finish_reason = None
        upstream_usage = None
        done = False

        def failure(code: str, message: str) -> BackendError:
            # Once output reached the user it must not be retried, and it is still charged for.
            if not parts:
                return BackendError(code, message)
            usage = _usage(None, len(parts), prompt_words)
            return PartialOutput(code, message, "".join(parts), usage)

        try:
            with client.stream("POST", url, json=body) as response:
                self._check_status(response)
                lines = response.iter_lines()
                for line in lines:
                    if emit.canceled():
                        raise Canceled()  # leaving the `with` closes the connection
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, event:/id: fields
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        done = True
                        # Read to the end of the body, as the openai SDK does: a response left
                        # unread closes its connection, and the next job connects again.
                        for _ in lines:
                            pass
                        break
                    try:
                        chunk = json.loads(data)
                        error = chunk.get("error")
                        choices = chunk.get("choices") or []
                        texts = [_choice_text(choice, chat) for choice in choices]
                        reasons = [choice.get("finish_reason") for choice in choices]
                    except (ValueError, AttributeError, TypeError):
                        raise failure(
                            "upstream_error", "upstream sent a malformed stream chunk"
                        ) from None
                    if error:
                        detail = _error_text({"error": error}) or "unknown error"
                        raise failure("upstream_error", f"upstream error mid-stream: {detail}")
                    upstream_usage = chunk.get("usage") or upstream_usage
                    for text in texts:
                        if text:
                            parts.append(text)
                            emit.delta(text)
                    finish_reason = next((r for r in reasons if r), finish_reason)
        except httpx.HTTPError as exc:
            error = _transport_error(exc, self.timeout)
            if isinstance(error, _Retryable):
                if parts:
                    raise failure("upstream_error", f"upstream stream ended early: {exc}") from None
                raise error from None
            raise failure(error.code, error.message) from None

        # Some servers omit [DONE]; a clean end after a finish_reason is still a whole answer.
        if not done and finish_reason is None:
            raise failure("upstream_error", "upstream stream ended early (no [DONE])")
        return Result(
            output={"text": "".join(parts), "finish_reason": finish_reason},
            usage=_usage(upstream_usage, len(parts), prompt_words),
        )

    @staticmethod
    def _check_status(response: httpx.Response) -> None:
        if response.is_success:
            return
        response.read()
        message = f"upstream returned HTTP {response.status_code}"
        detail = _error_text(response.content)
        if detail:
            message += f": {detail}"
        error = BackendError("upstream_error", message)
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(error, _retry_after(response))
        raise error


def embed(config: dict[str, Any], inputs: list[str]) -> tuple[list[list[float]], dict[str, int]]:
    """Embeds `inputs` on the upstream described by `config`; returns vectors and usage."""
    return OpenAIBackend(config).embed(inputs)


_clients: dict[float, httpx.Client] = {}
_clients_lock = threading.Lock()
_clients_pid = os.getpid()


def shared_client(timeout: float) -> httpx.Client:
    """One pooled client per process and timeout, for every upstream call.

    Building an httpx.Client loads the CA bundle into a new SSL context: 80-130 ms of CPU on
    this machine, which a client per job paid on every request. httpx clients are thread-safe
    and keep connections to the upstream alive between jobs.
    """
    global _clients_pid
    with _clients_lock:
        if _clients_pid != os.getpid():  # a forked worker child: its own connections
            _clients.clear()
            _clients_pid = os.getpid()
        client = _clients.get(timeout)
        if client is None or client.is_closed:
            client = _clients[timeout] = httpx.Client(
                timeout=httpx.Timeout(timeout),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )
        return client


class _Session:
    """The shared client with one job's headers (its key); nothing to close per job."""

    def __init__(self, client: httpx.Client, headers: dict[str, str]):
        self.client = client
        self.headers = headers

    def __enter__(self) -> "_Session":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def stream(self, method: str, url: str, **kwargs):
        return self.client.stream(method, url, headers=self.headers, **kwargs)

    def post(self, url: str, **kwargs) -> httpx.Response:
        return self.client.post(url, headers=self.headers, **kwargs)


def _default_timeout() -> float:
    try:
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured
    except ImportError:
        return DEFAULT_TIMEOUT
    try:
        return float(getattr(settings, "PLAYGROUND_UPSTREAM_TIMEOUT", DEFAULT_TIMEOUT))
    except ImproperlyConfigured:
        return DEFAULT_TIMEOUT  # no Django settings: a plain script or a bare test run


def _transport_error(exc: httpx.HTTPError, timeout: float) -> BackendError | _Retryable:
    """Maps an httpx failure to a contract error; network failures come back retryable."""
    if isinstance(exc, httpx.ConnectTimeout):
        return BackendError(
            "upstream_timeout", f"could not connect to upstream within {timeout:g} s"
        )
    if isinstance(exc, httpx.ReadTimeout):
        return BackendError("upstream_timeout", f"upstream sent nothing for {timeout:g} s")
    if isinstance(exc, httpx.TimeoutException):
        return BackendError("upstream_timeout", f"upstream timed out after {timeout:g} s")
    if isinstance(exc, httpx.ConnectError):
        return _Retryable(BackendError("upstream_error", f"could not connect to upstream: {exc}"))
    if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError)):
        return _Retryable(BackendError("upstream_error", f"upstream connection failed: {exc}"))
    return BackendError("upstream_error", f"upstream request failed: {type(exc).__name__}")


def _choice_text(choice: dict[str, Any], chat: bool) -> str | None:
    if chat:
        return (choice.get("delta") or {}).get("content")
    return choice.get("text")


def _usage(upstream: dict[str, Any] | None, chunks: int, prompt_words: int) -> dict[str, int]:
    # Without an upstream usage report we estimate: one token per content chunk (servers stream
    # about a token per chunk) and one per whitespace-separated prompt word. Real tokenizers
    # produce more tokens than words, so the estimate errs towards undercharging.
    prompt = _count(upstream, "prompt_tokens", prompt_words)
    completion = _count(upstream, "completion_tokens", chunks)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": _count(upstream, "total_tokens", prompt + completion),
    }


def _count(usage: Any, name: str, default: int) -> int:
    value = usage.get(name) if isinstance(usage, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return default


def _word_count(params: dict[str, Any]) -> int:
    if params.get("messages") is not None:
        return sum(len(str(m.get("content") or "").split()) for m in params["messages"])
    return len((params.get("prompt") or "").split())


def _error_text(payload: Any) -> str:
    """The upstream's own error message from a JSON error body, or "" if there is none."""
    if isinstance(payload, (bytes, str)):
        try:
            payload = json.loads(payload)
        except ValueError:
            return ""  # HTML error pages and the like say nothing useful
    if not isinstance(payload, dict):
        return ""
    # OpenAI and vLLM: {"error": {"message"}}; Ollama: {"error": "..."}; FastAPI: {"detail"}.
    error = payload.get("error", payload)
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail")
    return error[:ERROR_TEXT_LIMIT] if isinstance(error, str) else ""


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return 0.0  # absent, or an HTTP date, which is not worth parsing for a short wait


def _check_canceled(emit: Emitter | None) -> None:
    if emit is not None and emit.canceled():
        raise Canceled()


def _sleep(seconds: float, emit: Emitter | None) -> None:
    # Sleep in slices so a cancel during backoff is honoured promptly.
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        _check_canceled(emit)
        time.sleep(min(left, 0.05))
    _check_canceled(emit)


def _scrub_text(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _scrub(exc: BackendError, secrets: list[str]) -> None:
    """Removes secrets an upstream may have echoed (e.g. "Incorrect API key: sk-...")."""
    exc.message = _scrub_text(exc.message, secrets)
    exc.args = (exc.message,)
