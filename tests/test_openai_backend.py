"""Tests for the OpenAI-compatible backend against a local fake upstream."""

import socket
import time

import pytest

from playground.engine import openai_backend
from playground.engine.base import BackendError, Canceled
from playground.engine.openai_backend import OpenAIBackend, PartialOutput, embed

pytest_plugins = ["tests.fake_openai"]  # provides the fake_openai fixture

KEY = "sk-test-secret-123"


class Recorder:
    """An Emitter that records deltas and can ask for cancellation after some of them."""

    def __init__(self, cancel_after: int | None = None):
        self.deltas: list[str] = []
        self.logs: list[str] = []
        self.cancel_after = cancel_after

    def progress(self, value):
        pass

    def delta(self, text):
        self.deltas.append(text)

    def log(self, message):
        self.logs.append(message)

    def metrics(self, **numbers):
        pass

    def canceled(self):
        return self.cancel_after is not None and len(self.deltas) >= self.cancel_after


def params(**overrides):
    base = {
        "prompt": None,
        "messages": [{"role": "user", "content": "Say hello to the world"}],
        "max_tokens": 16,
        "temperature": 0.7,
        "top_p": 1.0,
        "seed": None,
        "stop": [],
    }
    return base | overrides


def backend(server, **config):
    return OpenAIBackend({"base_url": server.base_url, "upstream_model": "up-model"} | config)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(openai_backend, "BACKOFF_BASE", 0.01)


def test_chat_streams_deltas_and_takes_upstream_usage(fake_openai):
    emit = Recorder()
    result = backend(fake_openai).run(params(), emit)

    assert emit.deltas == ["Hello", ",", " world", "!"]
    assert result.output == {"text": "Hello, world!", "finish_reason": "stop"}
    assert result.usage == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    [request] = fake_openai.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.json["model"] == "up-model"
    assert request.json["messages"] == params()["messages"]
    assert request.json["stream"] is True
    assert request.json["stream_options"] == {"include_usage": True}
    assert "prompt" not in request.json
    assert "authorization" not in request.headers


def test_prompt_uses_completions_endpoint(fake_openai):
    emit = Recorder()
    result = backend(fake_openai).run(params(prompt="Once upon", messages=None), emit)

    assert result.output["text"] == "".join(emit.deltas) == "Hello, world!"
    [request] = fake_openai.requests
    assert request.path == "/v1/completions"
    assert request.json["prompt"] == "Once upon"
    assert "messages" not in request.json


def test_api_key_is_read_from_env_at_call_time(fake_openai, monkeypatch):
    b = backend(fake_openai, api_key_env="FAKE_UPSTREAM_KEY")
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", KEY)
    b.run(params(), Recorder())
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-rotated")
    b.run(params(), Recorder())

    sent = [r.headers["authorization"] for r in fake_openai.requests]
    assert sent == [f"Bearer {KEY}", "Bearer sk-rotated"]
    assert KEY not in repr(vars(b))


def test_missing_api_key_env_fails_without_calling_upstream(fake_openai, monkeypatch):
    monkeypatch.delenv("FAKE_UPSTREAM_KEY", raising=False)
    with pytest.raises(BackendError) as info:
        backend(fake_openai, api_key_env="FAKE_UPSTREAM_KEY").run(params(), Recorder())
    assert info.value.code == "upstream_error"
    assert "FAKE_UPSTREAM_KEY" in info.value.message
    assert fake_openai.requests == []


def test_error_message_has_status_and_upstream_text_but_not_the_key(fake_openai, monkeypatch):
    fake_openai.mode = "error401"  # echoes the key back, as OpenAI does
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", KEY)
    with pytest.raises(BackendError) as info:
        backend(fake_openai, api_key_env="FAKE_UPSTREAM_KEY").run(params(), Recorder())

    assert info.value.code == "upstream_error"
    assert "401" in info.value.message
    assert "Incorrect API key" in info.value.message
    assert KEY not in info.value.message and KEY not in str(info.value)
    assert fake_openai.base_url not in info.value.message
    assert len(fake_openai.requests) == 1  # a 4xx other than 429 is not retried


def test_optional_params_forwarded_only_when_set(fake_openai):
    b = backend(fake_openai)
    b.run(params(seed=42, stop=["\n", "END"], temperature=0.0, top_p=0.9), Recorder())
    b.run(params(seed=None, stop=[]), Recorder())

    first, second = (r.json for r in fake_openai.requests)
    assert first["seed"] == 42
    assert first["stop"] == ["\n", "END"]
    assert first["temperature"] == 0.0
    assert first["top_p"] == 0.9
    assert first["max_tokens"] == 16
    assert "seed" not in second and "stop" not in second


def test_500_is_retried_then_reported(fake_openai):
    fake_openai.mode = "error500"
    emit = Recorder()
    with pytest.raises(BackendError) as info:
        backend(fake_openai, retries=2).run(params(), emit)

    assert info.value.code == "upstream_error"
    assert "500" in info.value.message and "boom" in info.value.message
    assert len(fake_openai.requests) == 3
    assert len(emit.logs) == 2  # one note per retry


def test_429_then_ok_succeeds_and_honours_retry_after(fake_openai):
    fake_openai.mode = "error429-then-ok"
    fake_openai.retry_after = "0.3"
    started = time.monotonic()
    result = backend(fake_openai).run(params(), Recorder())

    assert result.output["text"] == "Hello, world!"
    assert len(fake_openai.requests) == 2
    assert time.monotonic() - started >= 0.3


def test_connection_refused_is_upstream_error():
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://user:url-secret-pw@127.0.0.1:{port}/v1"
    b = OpenAIBackend({"base_url": url, "upstream_model": "m", "retries": 1})
    with pytest.raises(BackendError) as info:
        b.run(params(), Recorder())
    assert info.value.code == "upstream_error"
    assert not isinstance(info.value, PartialOutput)
    assert "url-secret-pw" not in str(info.value) and str(port) not in str(info.value)


def test_hang_times_out_promptly(fake_openai):
    fake_openai.mode = "hang"
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        backend(fake_openai, timeout=0.5).run(params(), Recorder())

    elapsed = time.monotonic() - started
    assert info.value.code == "upstream_timeout"
    assert 0.4 < elapsed < 1.5
    assert len(fake_openai.requests) == 1  # a timeout is not retried


def test_stall_mid_stream_times_out_with_partial_output(fake_openai):
    fake_openai.mode = "stall"
    emit = Recorder()
    with pytest.raises(PartialOutput) as info:
        backend(fake_openai, timeout=0.5).run(params(), emit)

    assert info.value.code == "upstream_timeout"
    assert info.value.text == "Hello," == "".join(emit.deltas)
    assert info.value.usage["completion_tokens"] == 2


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "close-delimited"])
def test_stream_cut_halfway_raises_partial_output(fake_openai, chunked):
    fake_openai.mode = "cut"
    fake_openai.chunked = chunked
    emit = Recorder()
    with pytest.raises(PartialOutput) as info:
        backend(fake_openai).run(params(), emit)

    error = info.value
    assert isinstance(error, BackendError) and error.code == "upstream_error"
    assert "ended early" in error.message
    assert error.text == "Hello," == "".join(emit.deltas)
    # Five words in the prompt, two chunks delivered.
    assert error.usage == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert len(fake_openai.requests) == 1  # output was delivered, so no retry


def test_cancel_mid_stream_closes_the_connection(fake_openai):
    fake_openai.chunks = ["tok "] * 200
    fake_openai.chunk_delay = 0.01
    emit = Recorder(cancel_after=3)
    started = time.monotonic()
    with pytest.raises(Canceled):
        backend(fake_openai).run(params(), emit)

    assert len(emit.deltas) == 3
    assert time.monotonic() - started < 1.0
    assert fake_openai.disconnected.wait(2)


def test_no_usage_falls_back_to_counting(fake_openai):
    fake_openai.mode = "no-usage"
    result = backend(fake_openai).run(params(), Recorder())

    assert result.output["text"] == "Hello, world!"
    assert result.usage == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


def test_malformed_stream_is_upstream_error(fake_openai):
    fake_openai.mode = "garbage"
    with pytest.raises(BackendError) as info:
        backend(fake_openai).run(params(), Recorder())
    assert info.value.code == "upstream_error"
    assert "malformed" in info.value.message


def test_embed_returns_vectors_and_usage(fake_openai, monkeypatch):
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", KEY)
    config = {
        "base_url": fake_openai.base_url,
        "upstream_model": "embedder",
        "api_key_env": "FAKE_UPSTREAM_KEY",
    }
    vectors, usage = embed(config, ["one two", "three"])

    assert vectors == [[7.0, 0.0, 0.5], [5.0, 1.0, 0.5]]
    assert usage == {"prompt_tokens": 3, "total_tokens": 3}
    [request] = fake_openai.requests
    assert request.path == "/v1/embeddings"
    assert request.json == {"model": "embedder", "input": ["one two", "three"]}
    assert request.headers["authorization"] == f"Bearer {KEY}"


def test_embed_maps_errors(fake_openai):
    fake_openai.mode = "error500"
    config = {"base_url": fake_openai.base_url, "upstream_model": "e", "retries": 1}
    with pytest.raises(BackendError) as info:
        embed(config, ["x"])
    assert info.value.code == "upstream_error" and "500" in info.value.message
    assert len(fake_openai.requests) == 2


def test_default_timeout_from_django_settings():
    from django.test import override_settings

    with override_settings(PLAYGROUND_UPSTREAM_TIMEOUT=12):
        b = OpenAIBackend({"base_url": "http://127.0.0.1:9/v1", "upstream_model": "m"})
    assert b.timeout == 12.0
