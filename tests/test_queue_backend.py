"""The queue-style adapter against a real second Playground: one Playground in front of another.

The remote is a live embedded site (tests/live.py); the front is this test process. Its models:
the built-in trigram model, `slow` (the trigram model at 10 ms a token) and `slow-limited`
(50 ms a token, soft time limit 1 s).
"""

import socket
import threading
import time
from decimal import Decimal

import httpx
import pytest
from django.core.management import call_command

from billing import ledger
from playground.engine import queue_backend
from playground.engine.base import BackendError, Canceled
from playground.engine.queue_backend import QueueBackend
from tests.live import start_site

REMOTE_MODELS = """
from playground.models import AIModel
for slug, delay, soft in [("slow", 0.01, None), ("slow-limited", 0.05, 1)]:
    AIModel.objects.create(slug=slug, name=slug, modality="text", backend="trigram",
                           config={"token_delay": delay}, soft_time_limit=soft)
"""
KEY_ENV = "REMOTE_PLAYGROUND_TEST_KEY"


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    site = start_site(tmp_path_factory.mktemp("remote"))
    try:
        site.shell(REMOTE_MODELS)
        site.key = site.user_with_key("front@example.com", "100")
        yield site
    finally:
        site.stop()


@pytest.fixture(autouse=True)
def remote_key(remote, monkeypatch):
    monkeypatch.setenv(KEY_ENV, remote.key)
    monkeypatch.setattr(queue_backend, "POLL_MIN", 0.05)


def remote_api(remote, method, path, **kwargs):
    headers = {"Authorization": f"Bearer {remote.key}"}
    return httpx.request(method, remote.base_url + path, headers=headers, timeout=30, **kwargs)


def newest_remote_job(remote) -> dict:
    return remote_api(remote, "GET", "/v1/requests", params={"limit": 1}).json()["data"][0]


class Recorder:
    """An Emitter that records what the backend relays; cancels after `cancel_after` deltas."""

    def __init__(self, cancel_after=None):
        self.deltas, self.progress_values, self.logs = [], [], []
        self.cancel_after = cancel_after

    def progress(self, value):
        self.progress_values.append(value)

    def delta(self, text):
        self.deltas.append(text)

    def log(self, message):
        self.logs.append(message)

    def metrics(self, **numbers):
        pass

    def canceled(self):
        return self.cancel_after is not None and len(self.deltas) >= self.cancel_after


def backend(remote, model="slow", **config):
    base = {"base_url": remote.base_url + "/v1", "upstream_model": model, "api_key_env": KEY_ENV}
    return QueueBackend(base | config)


def params(**overrides):
    base = {"prompt": "The class", "messages": None, "max_tokens": 16, "temperature": 1.0}
    return base | {"top_p": 1.0, "seed": 7, "stop": []} | overrides


@pytest.mark.django_db(transaction=True)
def test_a_text_job_runs_on_the_remote_and_is_billed_here(
    remote, api, alice_key, alice_with_credits
):
    call_command(
        "models",
        "add-remote",
        "far-trigram",
        "--base-url",
        remote.base_url + "/v1",
        "--upstream-model",
        "trigram-pydoc",
        "--api-key-env",
        KEY_ENV,
        "--max-tokens",
        "1024",
        "--per-1k-input",
        "1",
        "--per-1k-output",
        "2",
    )
    body = {"model": "far-trigram", "prompt": "The class", "max_tokens": 20, "seed": 7}
    response = api.post("/v1/generate-text", {**body, "wait_for_result": True}, key=alice_key)
    doc = response.json()
    assert doc["status"] == "success" and doc["model"] == "far-trigram", doc
    # The remote ran it: its own job for the same parameters gives the same text and usage.
    there = newest_remote_job(remote)
    assert there["model"] == "trigram-pydoc" and there["status"] == "success"
    assert doc["text"] == there["text"] and doc["text"].strip()
    assert doc["usage"] == there["usage"] and doc["usage"]["completion_tokens"] == 20
    assert doc["finish_reason"] == "length"
    usage = doc["usage"]
    cost = (Decimal(usage["prompt_tokens"]) + 2 * Decimal(usage["completion_tokens"])) / 1000
    assert Decimal(doc["cost"]) == cost
    assert ledger.balances(alice_with_credits)[0] == Decimal(10) - cost
    assert remote.key not in response.content.decode()


def test_remote_progress_and_text_are_relayed_live(remote):
    emit = Recorder()
    result = backend(remote).run(params(max_tokens=200), emit)  # about 2 s there
    assert result.output["text"] == "".join(emit.deltas) and len(emit.deltas) >= 3
    assert result.usage["completion_tokens"] == 200
    live = [p for p in emit.progress_values if 0 < p < 1]
    assert len(live) >= 2 and live == sorted(live), emit.progress_values
    assert set(result.output) == {"text", "finish_reason"}


def test_cancel_here_cancels_the_remote_job(remote):
    emit = Recorder(cancel_after=1)
    with pytest.raises(Canceled):
        backend(remote).run(params(max_tokens=1000), emit)  # 10 s there
    there = newest_remote_job(remote)
    assert there["status"] == "canceled" and there["cost"] == "0", there


def test_remote_time_limit_keeps_its_code(remote):
    with pytest.raises(BackendError) as info:
        backend(remote, "slow-limited").run(params(max_tokens=500), Recorder())
    assert info.value.code == "time_limit" and "remote" in info.value.message


@pytest.mark.parametrize(
    "model,overrides,key,expected",
    [
        ("no-such-model", {}, None, "No model"),
        ("slow", {"max_tokens": 5000}, None, "max_tokens"),
        ("slow", {}, "pgk_wrong", "refused our API key"),
    ],
)
def test_remote_refusals_are_upstream_errors(remote, monkeypatch, model, overrides, key, expected):
    if key:
        monkeypatch.setenv(KEY_ENV, key)
    with pytest.raises(BackendError) as info:
        backend(remote, model).run(params(**overrides), Recorder())
    assert info.value.code == "upstream_error" and expected in info.value.message
    assert remote.key not in info.value.message


def test_unreachable_remote_is_an_upstream_error_after_retries(remote):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    emit = Recorder()
    with pytest.raises(BackendError) as info:
        backend(remote, base_url=f"http://127.0.0.1:{port}/v1", retries=1).run(params(), emit)
    assert info.value.code == "upstream_error" and "after 2 attempts" in info.value.message
    assert any("retrying" in line for line in emit.logs)


@pytest.mark.django_db(transaction=True)
def test_canceling_the_job_here_cancels_it_on_the_remote(remote, api, alice_key, monkeypatch):
    from django.db import connection

    from playground.engine import registry, runner
    from playground.models import Job

    base_url = remote.base_url + "/v1"
    options = ["--base-url", base_url, "--upstream-model", "slow", "--api-key-env", KEY_ENV]
    call_command("models", "add-remote", "far-slow", *options)
    monkeypatch.setattr(registry, "enqueue", lambda job: None)
    before = newest_remote_job(remote)["request_id"]
    body = {"model": "far-slow", "prompt": "The class", "max_tokens": 1000}  # 10 s there
    rid = api.post("/v1/generate-text", body, key=alice_key).json()["request_id"]

    def work():
        try:
            runner.run_job(Job.objects.get(request_id=rid).pk)
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 10
    while True:
        there = newest_remote_job(remote)
        if there["request_id"] != before and there["status"] == "running" and there.get("text"):
            break
        assert time.monotonic() < deadline, there
        time.sleep(0.05)
    doc = api.post(f"/v1/requests/{rid}/cancel", {}, key=alice_key).json()
    assert doc["status"] == "canceled" and doc["cost"] == "0"
    thread.join(5)
    assert not thread.is_alive()
    there = remote_api(remote, "GET", f"/v1/requests/{there['request_id']}").json()
    assert there["status"] == "canceled", there


async def test_a_front_playground_streams_the_remote_jobs_events(remote, tmp_path):
    """Two live sites: a client of the front one sees the remote's progress and text live."""
    import asyncio
    import json

    import websockets
    from asgiref.sync import sync_to_async

    front = await sync_to_async(start_site)(tmp_path, extra_env={KEY_ENV: remote.key})
    try:
        await sync_to_async(front.manage)(
            "models",
            "add-remote",
            "far-slow",
            "--base-url",
            remote.base_url + "/v1",
            "--upstream-model",
            "slow",
            "--api-key-env",
            KEY_ENV,
            "--max-tokens",
            "1024",
        )
        key = await sync_to_async(front.user_with_key)("client@example.com", "5")
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=front.base_url, headers=headers) as client:
            body = {"model": "far-slow", "prompt": "The class", "max_tokens": 200}
            r = await client.post("/v1/generate-text", json=body)
            assert r.status_code == 200, r.text
            rid = r.json()["request_id"]
        messages = []
        url = f"{front.ws_url}/ws/jobs/{rid}/"
        async with websockets.connect(url, additional_headers=headers) as ws:
            async with asyncio.timeout(30):
                async for raw in ws:
                    messages.append(json.loads(raw))
    finally:
        await sync_to_async(front.stop)()
    final = messages[-1]
    assert final["type"] == "result" and final["job"]["status"] == "success", final
    deltas = "".join(m["text"] for m in messages if m["type"] == "delta")
    assert deltas and final["job"]["text"].endswith(deltas)  # the snapshot may hold a start
    live = [m["progress"] for m in messages if m["type"] == "progress" and 0 < m["progress"] < 1]
    assert len(live) >= 2, [m["type"] for m in messages]
    assert final["job"]["usage"]["completion_tokens"] == 200


class FakeRemote:
    """A scripted queue-style API: `polls` is the list of (status code, body) answers to
    GET /v1/requests/r1, the last one repeated; records cancels."""

    def __init__(self, polls):
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        fake = self
        self.polls = list(polls)
        self.canceled = threading.Event()
        self.submitted = []  # the bodies of the submits
        self.uploads = []  # the (multipart) bodies of file uploads

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.endswith("/cancel"):
                    fake.canceled.set()
                    return self.answer(200, {"status": "canceled"})
                if self.path.endswith("/files"):
                    fake.uploads.append(body)
                    return self.answer(200, {"id": "f1", "object": "file"})
                fake.submitted.append(json.loads(body))
                self.answer(200, {"request_id": "r1", "status": "pending"})

            def do_GET(self):
                status, body = fake.polls.pop(0) if len(fake.polls) > 1 else fake.polls[0]
                self.answer(status, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def scripted(polls, **config):
    remote = FakeRemote(polls)
    config = {"base_url": remote.base_url, "upstream_model": "m", "modality": "image"} | config
    return remote, QueueBackend({"poll_min": 0.02, "poll_max": 0.05} | config)


def test_media_output_is_passed_through_and_429_only_slows_polling():
    busy = (429, {"error": {"message": "slow down"}})
    done = {
        "request_id": "r1",
        "model": "their-name",
        "status": "success",
        "created": 1,
        "progress": 1,
        "cost": "0.5",
        "images": [{"url": "https://remote.example/media/x.png?sig=abc"}],
        "seed": 42,
        "timings": {"inference": 1.5},
        "usage": {"images": 1, "note": "not a number"},
    }
    running = {"status": "running", "progress": 0.5}
    # 429s for longer than the timeout: the remote is there, so this is no timeout.
    remote, adapter = scripted([busy] * 15 + [(200, running), (200, done)], timeout=0.2)
    try:
        emit = Recorder()
        result = adapter.run({"prompt": "a cat"}, emit)
    finally:
        remote.close()
    assert result.output == {
        "images": [{"url": "https://remote.example/media/x.png?sig=abc"}],
        "seed": 42,
        "timings": {"inference": 1.5},
    }
    assert result.usage == {"images": 1}
    assert emit.progress_values == [0.5]
    assert not remote.canceled.is_set()


def test_remote_failing_for_longer_than_the_timeout_is_upstream_timeout_and_canceled():
    remote, adapter = scripted([(503, {"error": {"message": "overloaded"}})], timeout=0.3)
    try:
        with pytest.raises(BackendError) as info:
            adapter.run({"prompt": "a cat"}, Recorder())
        assert remote.canceled.wait(2)
    finally:
        remote.close()
    assert info.value.code == "upstream_timeout" and "overloaded" in info.value.message


@pytest.mark.parametrize(
    "answer,code",
    [
        (
            (200, {"status": "failed", "error": {"code": "upstream_timeout", "message": "x"}}),
            "upstream_timeout",
        ),
        ((200, {"status": "failed", "error": {"code": "insufficient_credits"}}), "upstream_error"),
        ((200, {"status": "canceled"}), "upstream_error"),
        ((404, {"error": {"message": "No such request."}}), "upstream_error"),
        ((200, ["not", "a", "document"]), "upstream_error"),
    ],
)
def test_remote_failures_map_to_our_codes(answer, code):
    remote, adapter = scripted([answer])
    try:
        with pytest.raises(BackendError) as info:
            adapter.run({"prompt": "a cat"}, Recorder())
    finally:
        remote.close()
    assert info.value.code == code


@pytest.mark.django_db(transaction=True)
def test_a_remote_image_model_is_charged_per_image_it_made(api, alice_key, alice_with_credits):
    image = {"url": "https://remote.example/media/x.png", "width": 64, "height": 64}
    done = {"request_id": "r1", "status": "success", "cost": "1", "images": [image, image]}
    fake = FakeRemote([(200, done)])
    try:
        call_command(
            "models", "add-remote", "far-images", "--base-url", fake.base_url,
            "--modality", "image", "--per-image", "0.5",
        )  # fmt: skip
        body = {"model": "far-images", "prompt": "a cat", "num_images": 3}
        doc = api.post("/v1/generate-image", {**body, "wait_for_result": True}, key=alice_key)
        doc = doc.json()
    finally:
        fake.close()
    # A Playground's status document has no usage for images: the two made are billed.
    assert doc["status"] == "success" and len(doc["images"]) == 2, doc
    assert Decimal(doc["cost"]) == Decimal("1.0")
    assert ledger.balances(alice_with_credits)[0] == Decimal(9)


@pytest.mark.parametrize(
    "modality,output,params,usage",
    [
        ("image", {"images": [{"url": "u"}] * 3}, {}, {"images": 3}),
        ("video", {"video": {"url": "u", "duration": 2.5}}, {}, {"seconds": 2.5}),
        ("video", {"video": {"url": "u"}}, {"num_frames": 24, "fps": 8}, {"seconds": 3}),
        ("audio", {"audio_url": "u", "duration": 4.2}, {"duration": 5}, {"seconds": 4.2}),
        ("audio", {"audio_url": "u"}, {"duration": 5}, {"seconds": 5}),
    ],
)
def test_remote_media_usage_comes_from_the_output(modality, output, params, usage):
    done = {"request_id": "r1", "status": "success", "cost": "0"} | output
    remote, adapter = scripted([(200, done)], modality=modality)
    try:
        result = adapter.run({"prompt": "a cat"} | params, Recorder())
    finally:
        remote.close()
    assert result.usage == usage


@pytest.mark.django_db(transaction=True)
def test_a_media_input_reaches_the_remote_as_a_data_uri(api, alice_key):
    import base64

    from tests.test_media_inputs import png

    video = {"url": "https://remote.example/media/v.mp4", "num_frames": 16, "fps": 8}
    done = {"request_id": "r1", "status": "success", "cost": "0", "video": video}
    fake = FakeRemote([(200, done)])
    picture = png()
    try:
        call_command(
            "models", "add-remote", "far-video", "--base-url", fake.base_url,
            "--modality", "video", "--per-second", "0.1",
        )  # fmt: skip
        uri = "data:image/png;base64," + base64.b64encode(picture).decode()
        body = {"model": "far-video", "prompt": "waves", "image": uri, "wait_for_result": True}
        doc = api.post("/v1/generate-video", body, key=alice_key).json()
    finally:
        fake.close()
    assert doc["status"] == "success", doc
    (sent,) = fake.submitted
    # Not our stored file's ref (meaningless there): the picture itself.
    assert sent["image"].startswith("data:image/png;base64,")
    assert base64.b64decode(sent["image"].split(",", 1)[1]) == picture
    assert sent["model"] == "far-video" and sent["prompt"] == "waves"
    assert Decimal(doc["cost"]) == Decimal("0.2")


@pytest.mark.django_db(transaction=True)
def test_a_large_media_input_is_uploaded_to_the_remote_and_sent_by_id(api, alice_key, monkeypatch):
    import base64

    from tests.test_media_inputs import png

    monkeypatch.setattr(queue_backend, "INLINE_INPUT_BYTES", 10)
    video = {"url": "https://remote.example/media/v.mp4", "num_frames": 16, "fps": 8}
    done = {"request_id": "r1", "status": "success", "cost": "0", "video": video}
    fake = FakeRemote([(200, done)])
    picture = png()
    try:
        call_command("models", "add-remote", "far-video", "--base-url", fake.base_url,
                     "--modality", "video")  # fmt: skip
        uri = "data:image/png;base64," + base64.b64encode(picture).decode()
        body = {"model": "far-video", "prompt": "waves", "image": uri, "wait_for_result": True}
        doc = api.post("/v1/generate-video", body, key=alice_key).json()
    finally:
        fake.close()
    assert doc["status"] == "success", doc
    (upload,) = fake.uploads
    assert picture in upload and b'name="purpose"' in upload
    assert fake.submitted[0]["image"] == "f1"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("inline_limit", [queue_backend.INLINE_INPUT_BYTES, 10])
def test_image_to_video_runs_on_a_remote_playground(
    remote, api, alice_key, monkeypatch, inline_limit
):
    import base64

    from tests.test_media_inputs import png

    monkeypatch.setattr(queue_backend, "INLINE_INPUT_BYTES", inline_limit)
    call_command("models", "add-remote", "far-animate", "--base-url", remote.base_url + "/v1",
                 "--upstream-model", "animate-video", "--api-key-env", KEY_ENV,
                 "--modality", "video", "--per-second", "0.1")  # fmt: skip
    uri = "data:image/png;base64," + base64.b64encode(png()).decode()
    body = {"model": "far-animate", "prompt": "zoom", "image": uri, "num_frames": 8, "fps": 8}
    doc = api.post("/v1/generate-video", {**body, "wait_for_result": True}, key=alice_key).json()
    assert doc["status"] == "success", doc
    there = newest_remote_job(remote)
    assert there["model"] == "animate-video" and there["status"] == "success"
    assert Decimal(doc["cost"]) == Decimal("0.1")  # 8 frames at 8 fps: 1 s
