"""The websocket protocol of CONTRACT §7, in process: auth, ownership, snapshot, events, result."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from accounts import keys
from playground.asgi import application
from playground.engine import registry
from playground.engine.runner import run_job
from playground.models import Job

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "trigram-pydoc"


@pytest.fixture(autouse=True)
async def _close_thread_connections():
    """sync_to_async runs ORM calls in a helper thread; its connection must not outlive the test."""
    yield
    await sync_to_async(connections.close_all)()


def run_job_and_close(pk):
    try:
        run_job(pk)
    finally:
        connections.close_all()


def make_pending_job(api, key, monkeypatch, **params):
    monkeypatch.setattr(registry, "enqueue", lambda job: None)
    body = {"model": MODEL, "prompt": "The class", "max_tokens": 24, **params}
    return api.post("/v1/generate-text", body, key=key).json()["request_id"]


async def connect(request_id, key=None, cookie=None):
    headers = []
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    comm = WebsocketCommunicator(application, f"/ws/jobs/{request_id}/", headers=headers)
    connected, _ = await comm.connect()
    return comm, connected


async def receive_all(comm, timeout=5):
    messages = []
    while True:
        output = await comm.receive_output(timeout)
        if output["type"] == "websocket.close":
            return messages, output.get("code")
        import json

        messages.append(json.loads(output["text"]))


async def test_events_stream_in_order_and_end_with_result(api, alice_key, monkeypatch):
    request_id = await sync_to_async(make_pending_job)(api, alice_key, monkeypatch)
    comm, connected = await connect(request_id, key=alice_key)
    assert connected
    snapshot = await comm.receive_json_from()
    assert snapshot == {"type": "snapshot", "job": snapshot["job"]}
    assert snapshot["job"]["status"] == "pending"
    job = await Job.objects.aget(request_id=request_id)
    await sync_to_async(run_job)(job.pk)
    messages, code = await receive_all(comm)
    assert code == 1000
    types = [m["type"] for m in messages]
    assert types[0] == "status" and messages[0]["status"] == "running"
    assert types[-1] == "result"
    result = messages[-1]["job"]
    assert result["status"] == "success"
    assert "".join(m["text"] for m in messages if m["type"] == "delta") == result["text"]
    assert types.count("delta") == result["usage"]["completion_tokens"]
    progress = [m["progress"] for m in messages if m["type"] == "progress"]
    assert progress == sorted(progress) and all(0 <= p <= 1 for p in progress)


async def test_late_subscriber_gets_partial_text_then_only_new_deltas(api, alice_key, monkeypatch):
    request_id = await sync_to_async(make_pending_job)(api, alice_key, monkeypatch, max_tokens=40)
    job = await Job.objects.aget(request_id=request_id)
    from playground.engine import textgen

    real = textgen.run_text
    halfway = asyncio.Event()
    go_on = __import__("threading").Event()
    loop = asyncio.get_running_loop()

    def paused(params, emit):
        class Pausing:
            def __init__(self):
                self.n = 0

            def __getattr__(self, name):
                return getattr(emit, name)

            def delta(self, text):
                emit.delta(text)
                self.n += 1
                if self.n == 10:
                    loop.call_soon_threadsafe(halfway.set)
                    go_on.wait(5)

        return real(params, Pausing())

    monkeypatch.setattr(textgen, "run_text", paused)
    task = asyncio.ensure_future(sync_to_async(run_job_and_close, thread_sensitive=False)(job.pk))
    await asyncio.wait_for(halfway.wait(), 5)
    comm, _ = await connect(request_id, key=alice_key)
    snapshot = await comm.receive_json_from()
    assert snapshot["job"]["status"] == "running"
    assert snapshot["job"]["text"]
    go_on.set()
    messages, code = await receive_all(comm)
    await task
    deltas = "".join(m["text"] for m in messages if m["type"] == "delta")
    assert snapshot["job"]["text"] + deltas == messages[-1]["job"]["text"]


async def test_terminal_job_sends_snapshot_and_closes(api, alice_key):
    body = await sync_to_async(api.post)(
        "/v1/generate-text",
        {"model": MODEL, "prompt": "x", "max_tokens": 2, "wait_for_result": True},
        key=alice_key,
    )
    comm, _ = await connect(body.json()["request_id"], key=alice_key)
    messages, code = await receive_all(comm)
    assert code == 1000
    assert [m["type"] for m in messages] == ["snapshot"]
    assert messages[0]["job"]["status"] == "success"


async def test_no_or_bad_credentials_close_4401(api, alice_key, monkeypatch):
    request_id = await sync_to_async(make_pending_job)(api, alice_key, monkeypatch)
    for key in (None, "pgk_bogus_bogus_bogus_bogus"):
        comm, _ = await connect(request_id, key=key)
        messages, code = await receive_all(comm)
        assert (messages, code) == ([], 4401)


async def test_revoked_key_closes_4401(api, alice_key, monkeypatch):
    request_id = await sync_to_async(make_pending_job)(api, alice_key, monkeypatch)
    key = await sync_to_async(keys.find_key)(alice_key)
    await sync_to_async(keys.revoke)(key)
    comm, _ = await connect(request_id, key=alice_key)
    assert await receive_all(comm) == ([], 4401)


async def test_another_users_job_closes_4404(api, alice_key, bob_key, monkeypatch):
    request_id = await sync_to_async(make_pending_job)(api, alice_key, monkeypatch)
    for rid in (request_id, "2b1e3f2c-0000-4000-8000-000000000000"):
        comm, _ = await connect(rid, key=bob_key)
        assert await receive_all(comm) == ([], 4404)


async def test_session_cookie_authenticates(
    api, client, alice_with_credits, alice_key, monkeypatch
):
    request_id = await sync_to_async(make_pending_job)(api, alice_key, monkeypatch)
    await sync_to_async(client.force_login)(alice_with_credits)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    comm, _ = await connect(request_id, cookie=cookie)
    snapshot = await comm.receive_json_from()
    assert snapshot["job"]["request_id"] == request_id
    await comm.disconnect()


async def test_foreign_origin_is_refused(api, alice_key, monkeypatch):
    request_id = await sync_to_async(make_pending_job)(api, alice_key, monkeypatch)
    comm = WebsocketCommunicator(
        application,
        f"/ws/jobs/{request_id}/",
        headers=[
            (b"origin", b"https://evil.example"),
            (b"authorization", f"Bearer {alice_key}".encode()),
        ],
    )
    connected, _ = await comm.connect()
    assert not connected


@pytest.mark.parametrize(
    "path",
    ["/ws/jobs/not-a-uuid/", "/ws/jobs/%C2%B2/", "/ws/jobs/a/b/", "/ws/nowhere/", "/ws/"],
)
async def test_unknown_or_malformed_paths_close_4404(api, alice_key, path):
    comm = WebsocketCommunicator(
        application, path, headers=[(b"authorization", f"Bearer {alice_key}".encode())]
    )
    connected, _ = await comm.connect()
    assert connected
    assert await receive_all(comm) == ([], 4404)


async def test_bad_credentials_are_checked_before_a_malformed_id(api):
    comm, connected = await connect("not-a-uuid", key="pgk_bogus_bogus_bogus_bogus")
    assert connected
    assert await receive_all(comm) == ([], 4401)


async def test_an_event_after_a_4404_close_is_ignored(api, alice_key, bob_key, monkeypatch):
    from channels.layers import get_channel_layer

    from playground.engine import events

    request_id = await sync_to_async(make_pending_job)(api, alice_key, monkeypatch)
    comm, _ = await connect(request_id, key=bob_key)
    assert await receive_all(comm) == ([], 4404)
    payload = {"type": "status", "status": "running", "progress": 0}
    message = {"type": "job.event", "seq": 1, "payload": payload}
    await get_channel_layer().group_send(events.group_name(request_id), message)
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()  # raises what the consumer raised, if anything
