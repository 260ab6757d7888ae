"""The OpenAI-compatible endpoints (CONTRACT §5) with the official openai SDK, black-box."""

import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import openai
import pytest

from tests.fake_openai import FakeOpenAI
from tests.live import start_site

MODEL = "trigram-pydoc"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = start_site(tmp_path_factory.mktemp("openai-site"))
    site.key = site.user_with_key("sdk@example.com", "50")
    site.poor_key = site.user_with_key("poor@example.com", "0")
    yield site
    site.stop()


@pytest.fixture(scope="module")
def slow_upstream(site):
    fake = FakeOpenAI().start()
    fake.chunks = ["Once", " upon", " a", " time", ",", " slowly", "."]
    fake.chunk_delay = 0.3
    site.manage(
        "models",
        "add-openai",
        "slow",
        "--base-url",
        fake.base_url,
        "--per-1k-input",
        "1",
        "--per-1k-output",
        "1",
    )
    yield fake
    fake.close()


@pytest.fixture
def client(site):
    return openai.OpenAI(base_url=site.base_url + "/v1", api_key=site.key, max_retries=0)


def request_doc(site, request_id):
    headers = {"Authorization": f"Bearer {site.key}"}
    return httpx.get(f"{site.base_url}/v1/requests/{request_id}", headers=headers).json()


def test_chat_completion(site, client):
    messages = [{"role": "user", "content": "What is a class?"}]
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, seed=7)
    assert r.object == "chat.completion" and r.model == MODEL
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    doc = request_doc(site, r.id)  # the id is the job's request_id
    assert doc["status"] == "success" and doc["text"] == r.choices[0].message.content
    assert Decimal(r.usage.model_extra["cost"]) == Decimal(doc["cost"]) > 0


def test_same_seed_same_text(client):
    kwargs = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10}
    first = client.chat.completions.create(seed=3, **kwargs).choices[0].message.content
    assert client.chat.completions.create(seed=3, **kwargs).choices[0].message.content == first


def test_chat_stream_with_usage(site, client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me about modules"}],
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length") and not any(finishes[:-1])
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.completion_tokens <= 20
    doc = request_doc(site, chunks[0].id)
    assert doc["text"] == text
    assert usage.usage.model_extra["cost"] == doc["cost"]


def test_stream_headers_and_done(site):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 3,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {site.key}"}
    with httpx.stream(
        "POST", f"{site.base_url}/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-accel-buffering"] == "no"
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def test_text_completion(client):
    r = client.completions.create(model=MODEL, prompt="The class", max_tokens=8)
    assert r.object == "text_completion" and r.choices[0].text
    assert r.usage.completion_tokens <= 8


def test_models_list_and_errors(site, client):
    assert MODEL in [m.id for m in client.models.list()]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "x"}])
    assert info.value.body["param"] == "messages.0.role"
    bad = openai.OpenAI(base_url=site.base_url + "/v1", api_key="pgk_" + "x" * 43, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    poor = openai.OpenAI(base_url=site.base_url + "/v1", api_key=site.poor_key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        poor.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 402 and info.value.body["code"] == "insufficient_credits"


def test_completions_are_jobs_in_history(site, client):
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=2
    )
    headers = {"Authorization": f"Bearer {site.key}"}
    listing = httpx.get(f"{site.base_url}/v1/requests?limit=100", headers=headers).json()
    assert r.id in [d["request_id"] for d in listing["data"]]


def test_upstream_stream_relayed_live(site, client, slow_upstream):
    started = time.monotonic()
    stream = client.chat.completions.create(
        model="slow", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    arrivals = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append((time.monotonic() - started, chunk.choices[0].delta.content))
    assert "".join(t for _, t in arrivals) == "Once upon a time, slowly."
    # Tokens arrive as the upstream sends them, not all at the end.
    assert arrivals[-1][0] - arrivals[0][0] > 1.0


def test_client_disconnect_cancels_and_charges_only_what_was_sent(site, client, slow_upstream):
    before = Decimal(site.manage("credits", "balance", "sdk@example.com").stdout)
    stream = client.chat.completions.create(
        model="slow", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    received = ""
    for chunk in stream:
        received += chunk.choices[0].delta.content or ""
        if received:
            break
    stream.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        doc = request_doc(site, chunk.id)
        if doc["status"] not in ("pending", "running"):
            break
        time.sleep(0.2)
    assert doc["status"] == "canceled"
    sent = doc["usage"]["completion_tokens"]
    assert 1 <= sent < len(slow_upstream.chunks)
    # 1 prompt word and the pieces sent, at 1 credit per 1K tokens each; nothing for the rest.
    assert Decimal(doc["cost"]) == Decimal(1 + sent) / 1000
    after = Decimal(site.manage("credits", "balance", "sdk@example.com").stdout)
    assert before - after == Decimal(doc["cost"])


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings_list_and_string(site, client):
    texts = ["the cat sat on the mat", "a cat sat on a mat", "quarterly revenue grew ten percent"]
    r = client.embeddings.create(model="hash-embed", input=texts, encoding_format="float")
    vectors = [d.embedding for d in r.data]
    assert [d.index for d in r.data] == [0, 1, 2] and len(vectors[0]) == 256
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    single = client.embeddings.create(model="hash-embed", input=texts[0], encoding_format="float")
    assert single.data[0].embedding == vectors[0]  # deterministic
    assert r.usage.prompt_tokens == 6 + 6 + 5
    doc = request_doc(site, r.model_extra["id"])
    assert doc["status"] == "success" and r.usage.model_extra["cost"] == doc["cost"]


def test_embeddings_base64_is_float32(client):
    as_float = client.embeddings.create(model="hash-embed", input="x y", encoding_format="float")
    # The SDK asks for base64 by default and decodes it as little-endian float32.
    as_b64 = client.embeddings.create(model="hash-embed", input="x y")
    for a, b in zip(as_float.data[0].embedding, as_b64.data[0].embedding, strict=True):
        assert abs(a - b) < 1e-6


def test_embeddings_errors(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MODEL, input="x")
    assert info.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="hash-embed", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="hash-embed", input=[])
    assert info.value.body["param"] == "input"


def test_upstream_embeddings_model(site, client):
    fake = FakeOpenAI().start()
    try:
        site.manage(
            "models",
            "add-openai",
            "up-embed",
            "--base-url",
            fake.base_url,
            "--modality",
            "embedding",
            "--upstream-model",
            "text-embedding-3-small",
        )
        r = client.embeddings.create(model="up-embed", input=["a", "b"], encoding_format="float")
        assert len(r.data) == 2 and r.model == "up-embed"
        assert fake.requests[-1].json["model"] == "text-embedding-3-small"
    finally:
        fake.close()


def post(path, body, key):
    """In this process (the module's `client` is the SDK's, so no `api` fixture here)."""
    import json

    from django.test import Client

    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    return Client().post(path, json.dumps(body), content_type="application/json", **headers)


async def _read(content) -> bytes:
    return b"".join([part async for part in content])


@pytest.fixture
def short_wait(settings, monkeypatch):
    """The OpenAI endpoints give up waiting for a job after 1 s."""
    from playground import openai_api

    settings.PLAYGROUND_UPSTREAM_TIMEOUT = 1
    monkeypatch.setattr(openai_api, "WAIT_MARGIN", 0)


@pytest.mark.django_db(transaction=True)
async def test_a_stream_out_of_time_cancels_its_job_and_charges_what_was_sent(
    alice_key, alice_with_credits, short_wait, monkeypatch
):
    import json
    import threading

    from asgiref.sync import sync_to_async
    from django.db import connection
    from django.test import AsyncClient

    from billing import ledger
    from playground.engine import registry, runner
    from playground.models import AIModel, Job

    def work(job_id):
        try:
            runner.run_job(job_id)
        finally:
            connection.close()

    workers = []

    def enqueue(job):  # as a worker would: apart (tests run jobs eagerly, inside the submit)
        workers.append(threading.Thread(target=work, args=[job.pk]))
        workers[-1].start()

    monkeypatch.setattr(registry, "enqueue", enqueue)
    await AIModel.objects.acreate(
        slug="slow-trigram", name="slow", modality="text", backend="trigram",
        config={"token_delay": 0.05}, per_1k_input=Decimal(1), per_1k_output=Decimal(1),
    )  # fmt: skip
    body = {"model": "slow-trigram", "prompt": "The class", "max_tokens": 200, "stream": True}
    response = await AsyncClient().post(
        "/v1/completions", body, content_type="application/json",
        headers={"Authorization": f"Bearer {alice_key}"},
    )  # fmt: skip  # 10 s of tokens
    events = (await _read(response.streaming_content)).decode().split("\n\n")
    chunks = [json.loads(e[6:]) for e in events if e.startswith("data: {")]
    assert events[-2] == "data: [DONE]"
    assert chunks[-1].get("error", {}).get("code") == "upstream_timeout", chunks[-1]
    sent = sum(1 for c in chunks[1:-1] if c["choices"][0]["text"])
    assert sent < 200
    await sync_to_async(workers[0].join)(5)
    job = await Job.objects.aget()
    assert job.status == Job.CANCELED
    # What the stream delivered is charged (CONTRACT §8), the rest of the 200 tokens is not.
    assert job.usage.get("completion_tokens", 0) == sent
    prompt = job.usage.get("prompt_tokens", 0)
    assert job.cost == (Decimal(prompt + sent) / 1000 if sent else 0)
    balance = (await sync_to_async(ledger.balances)(alice_with_credits))[0]
    assert balance == Decimal(10) - job.cost


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "path,body",
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/completions", {"prompt": "The class"}),
        ("/v1/embeddings", {"model": "hash-embed", "input": "a cat"}),
    ],
)
def test_a_job_still_waiting_at_the_deadline_is_canceled_and_504(
    alice_key, alice_with_credits, short_wait, monkeypatch, path, body
):
    from billing import ledger
    from playground.engine import registry
    from playground.models import Job

    monkeypatch.setattr(registry, "enqueue", lambda job: None)  # it never starts
    response = post(path, {"model": MODEL, **body}, alice_key)
    assert response.status_code == 504, response.content
    error = response.json()["error"]
    assert error["code"] == "upstream_timeout" and error["type"] and "param" in error
    job = Job.objects.get()
    # Nobody will receive its output: it must not run (and be charged) later.
    assert job.status == Job.CANCELED and job.cost == 0 and not job.hold_open
    assert ledger.balances(alice_with_credits)[0] == Decimal(10)


def test_many_streams_at_once_all_run_at_once(site):
    """Streamed upstream jobs run in the web process, each on a thread while the upstream
    answers: ten at once must all be in flight at once (asyncio's default executor, which
    ran them, had min(32, cores + 4) threads: 6 here, the rest waited their turn)."""
    fake = FakeOpenAI().start()
    fake.chunks = ["a", "b", "c"]
    fake.answer_when_in_flight = 10  # (6 when capped: they wait 10 s, then the test fails)
    try:
        site.manage("models", "add-openai", "wide", "--base-url", fake.base_url)
        body = {"model": "wide", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        headers = {"Authorization": f"Bearer {site.key}"}

        def stream(_):
            with httpx.stream(
                "POST", site.base_url + "/v1/chat/completions", json=body, headers=headers,
                timeout=30,
            ) as response:  # fmt: skip
                return response.status_code, response.read().decode()

        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(stream, range(10)))
        assert all(status == 200 and "data: [DONE]" in text for status, text in results)
        assert fake.most_in_flight == 10
    finally:
        fake.close()
