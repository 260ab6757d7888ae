"""Rate limits per key tier (CONTRACT §6): headers, budgets, 429, websockets, concurrency."""

import threading

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from accounts import keys
from playground import ratelimit
from playground.engine import registry

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "trigram-pydoc"


@pytest.fixture(autouse=True)
def _no_engine(monkeypatch):
    # Jobs stay pending: these tests count requests, not generations.
    monkeypatch.setattr(registry, "enqueue", lambda job: None)


@pytest.fixture
def free_key(alice_with_credits):
    return keys.create_key(alice_with_credits, "free", tier="free")[1]


def submit(api, key):
    return api.post("/v1/generate-text", {"model": MODEL, "prompt": "x", "max_tokens": 1}, key=key)


def test_headers_on_every_authenticated_response(api, free_key):
    first = submit(api, free_key)
    assert first["X-RateLimit-Limit"] == "20"
    assert first["X-RateLimit-Remaining"] == "19"
    assert 0 <= int(first["X-RateLimit-Reset"]) <= 60
    read = api.get("/v1/requests", key=free_key)
    assert read["X-RateLimit-Limit"] == "200" and read["X-RateLimit-Remaining"] == "199"
    # Errors count and carry headers too.
    bad = api.post("/v1/generate-text", {"model": MODEL, "max_tokens": 0}, key=free_key)
    assert bad.status_code == 400 and bad["X-RateLimit-Remaining"] == "18"
    missing = api.get("/v1/requests/00000000-0000-4000-8000-000000000000", key=free_key)
    assert missing.status_code == 404 and missing["X-RateLimit-Remaining"] == "198"
    assert "X-RateLimit-Limit" not in api.get("/v1/models")  # no key, no budget


def test_submit_budget_then_429_with_retry_after(api, free_key):
    for _ in range(20):
        assert submit(api, free_key).status_code == 200
    refused = submit(api, free_key)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused["X-RateLimit-Remaining"] == "0"
    # Reads have their own budget, and polls are reads.
    rid = api.get("/v1/requests", key=free_key).json()["data"][0]["request_id"]
    poll = api.post("/v1/generate-text", {"request_id": rid}, key=free_key)
    assert poll.status_code == 200 and poll["X-RateLimit-Limit"] == "200"


def test_reads_never_eat_the_submit_budget(api, free_key):
    for _ in range(30):
        api.get("/v1/requests", key=free_key)
    assert submit(api, free_key)["X-RateLimit-Remaining"] == "19"


def test_pro_and_unlimited_tiers(api, alice_with_credits):
    pro = keys.create_key(alice_with_credits, "pro", tier="pro")[1]
    assert submit(api, pro)["X-RateLimit-Limit"] == "600"
    unlimited = keys.create_key(alice_with_credits, "u", tier="unlimited")[1]
    response = submit(api, unlimited)
    assert response.status_code == 200 and "X-RateLimit-Limit" not in response


def test_limits_are_per_key(api, alice_with_credits, free_key):
    for _ in range(20):
        submit(api, free_key)
    other = keys.create_key(alice_with_credits, "other", tier="free")[1]
    assert submit(api, other).status_code == 200


def test_daily_window_is_reported_when_tighter(api, free_key, monkeypatch):
    monkeypatch.setitem(ratelimit.TIERS, "free", (20, 3))
    headers = [submit(api, free_key) for _ in range(3)]
    assert [h["X-RateLimit-Limit"] for h in headers] == ["3", "3", "3"]
    assert headers[-1]["X-RateLimit-Remaining"] == "0"
    assert submit(api, free_key).status_code == 429


def test_concurrent_submits_are_counted_exactly(alice_with_credits):
    key = keys.authenticate_key(keys.create_key(alice_with_credits, "c", tier="free")[1])
    outcomes = []

    def worker():
        for _ in range(5):
            try:
                ratelimit.hit(key, "submit")
                outcomes.append("ok")
            except Exception:
                outcomes.append("refused")
        connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert outcomes.count("ok") == 20 and outcomes.count("refused") == 20


@pytest.fixture(autouse=True)
async def _close_thread_connections():
    yield
    await sync_to_async(connections.close_all)()


async def test_websocket_over_read_budget_closes_4429(api, alice_with_credits, monkeypatch):
    from playground.asgi import application

    monkeypatch.setitem(ratelimit.TIERS, "free", (1, 100))  # reads: 10 per minute
    raw = await sync_to_async(lambda: keys.create_key(alice_with_credits, "ws", tier="free")[1])()
    rid = (await sync_to_async(submit)(api, raw)).json()["request_id"]
    codes = []
    for _ in range(11):
        comm = WebsocketCommunicator(
            application, f"/ws/jobs/{rid}/", headers=[(b"authorization", f"Bearer {raw}".encode())]
        )
        await comm.connect()
        first = await comm.receive_output(5)
        if first["type"] == "websocket.close":
            codes.append(first["code"])
        else:
            codes.append("open")
            await comm.disconnect()
    assert codes[:10] == ["open"] * 10 and codes[10] == 4429
