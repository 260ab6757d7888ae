"""Services mode, black-box: daphne + a separate `manage.py worker` on PostgreSQL and Redis.

One site per module (tests/live.py). Jobs are kept pending where a test needs it by stopping the
worker process with SIGSTOP: daphne's embedded worker is off in services mode, so nothing else
can run them.
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import websockets

from tests.live import require_services, start_site

pytestmark = pytest.mark.services

MODEL = "trigram-pydoc"
# A closing handshake or an event should arrive in well under this; bounds every wait.
EVENT_TIMEOUT = 15.0
MAX_MESSAGES = 500


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    require_services()
    site = start_site(tmp_path_factory.mktemp("services"), services=True, workers=1)
    try:
        # "poor" can afford no job and doubles as the other user for ownership checks.
        emails = {"main": "main@example.com", "poor": "poor@example.com"}
        credits = {"main": "50", "poor": "0.0001"}
        with ThreadPoolExecutor(len(emails)) as pool:
            futures = {
                name: pool.submit(site.user_with_key, email, credits[name])
                for name, email in emails.items()
            }
            site.keys = {name: f.result() for name, f in futures.items()}
        site.emails = emails
        yield site
    finally:
        for proc in site.processes:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        site.stop()


def worker_process(site):
    (proc,) = [p for p in site.processes if "worker" in p.args]
    assert proc.poll() is None, "the worker process has exited:\n" + site.log("worker0")[-3000:]
    return proc


def daphne_process(site):
    (proc,) = [p for p in site.processes if "daphne" in p.args]
    assert proc.poll() is None, "daphne has exited:\n" + site.log("daphne")[-3000:]
    return proc


@contextmanager
def worker_stopped(site):
    """The worker process frozen (SIGSTOP) for the block; always resumed afterwards."""
    proc = worker_process(site)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield proc
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def api(site, method, path, key, **kwargs):
    kwargs.setdefault("timeout", 30)
    return httpx.request(method, site.base_url + path, headers=auth(key), **kwargs)


def submit(site, key, **extra):
    body = {"model": MODEL, "prompt": "How do generators work?", "max_tokens": 16, **extra}
    return api(site, "POST", "/v1/generate-text", key, json=body)


def submit_ok(site, key) -> str:
    r = submit(site, key)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "pending" and doc["model"] == MODEL
    return doc["request_id"]


def balance(site, who) -> Decimal:
    return Decimal(site.manage("credits", "balance", site.emails[who]).stdout.strip())


def ws_connect(site, request_id, key=None, **kwargs):
    headers = auth(key) if key is not None else {}
    return websockets.connect(
        f"{site.ws_url}/ws/jobs/{request_id}/",
        additional_headers=headers,
        open_timeout=EVENT_TIMEOUT,
        close_timeout=5,
        **kwargs,
    )


async def recv_json(ws, timeout=EVENT_TIMEOUT):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def collect(ws, timeout=EVENT_TIMEOUT):
    """Every message until the server closes: (messages, close code). Bounded in count and time."""
    messages = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < MAX_MESSAGES:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"socket still open after {timeout} s; got {messages}")
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
        pytest.fail(f"more than {MAX_MESSAGES} messages without a close")
    except websockets.ConnectionClosed as exc:
        return messages, exc.rcvd.code if exc.rcvd else None
    except TimeoutError:
        pytest.fail(f"socket still open after {timeout} s; got {messages}")


async def assert_silent(ws, seconds):
    """Nothing arrives and the socket stays open for `seconds`."""
    try:
        message = await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return
    except websockets.ConnectionClosed as exc:
        pytest.fail(f"socket closed while the job was pending: {exc.rcvd}")
    pytest.fail(f"unexpected message while the job was pending: {message}")


def check_full_stream(messages, code, request_id):
    """After a pending snapshot: status running, deltas, result (success), close 1000."""
    assert code == 1000, (code, messages)
    types = [m["type"] for m in messages]
    assert types[-1] == "result", types
    assert types.count("result") == 1, types
    statuses = [m["status"] for m in messages if m["type"] == "status"]
    assert "running" in statuses, types
    first_running = types.index("status")
    deltas = [i for i, t in enumerate(types) if t == "delta"]
    assert deltas, types
    assert messages[first_running]["status"] == "running"
    assert first_running < deltas[0], "a delta arrived before the running status"
    final = messages[-1]["job"]
    assert final["request_id"] == request_id
    assert final["status"] == "success", final
    assert final["progress"] == 1
    assert "".join(messages[i]["text"] for i in deltas) == final["text"]
    assert final["text"].strip()
    assert Decimal(final["cost"]) > 0
    usage = final["usage"]
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    return final


# 1. The job path across processes ---------------------------------------------------------


async def test_job_runs_in_worker_process_and_streams_to_websocket(site):
    require_services()
    key = site.keys["main"]
    with worker_stopped(site):
        request_id = submit_ok(site, key)
        # No Origin header (an API client), Bearer key.
        async with ws_connect(site, request_id, key) as ws:
            snapshot = await recv_json(ws)
            assert snapshot["type"] == "snapshot", snapshot
            assert snapshot["job"]["request_id"] == request_id
            assert snapshot["job"]["status"] == "pending"
            # The web process does not run it: with the worker frozen, nothing happens.
            await assert_silent(ws, 1.5)
            r = api(site, "GET", f"/v1/requests/{request_id}", key)
            assert r.status_code == 200 and r.json()["status"] == "pending", r.text
            os.kill(worker_process(site).pid, signal.SIGCONT)
            messages, code = await collect(ws)
    final = check_full_stream(messages, code, request_id)

    # Polling on the same endpoint and GET /v1/requests/{id} give the same final document.
    r = api(site, "POST", "/v1/generate-text", key, json={"request_id": request_id})
    assert r.status_code == 200, r.text
    assert r.json() == final
    r = api(site, "GET", f"/v1/requests/{request_id}", key)
    assert r.status_code == 200, r.text
    assert r.json() == final
    # A socket opened on the finished job gets the final document as its snapshot, then 1000.
    async with ws_connect(site, request_id, key) as ws:
        messages, code = await collect(ws)
    assert (messages, code) == ([{"type": "snapshot", "job": final}], 1000)


def test_wait_for_result_returns_final_document(site):
    require_services()
    key = site.keys["main"]
    r = submit(site, key, wait_for_result=True)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "success", doc
    assert doc["model"] == MODEL and doc["text"].strip() and Decimal(doc["cost"]) > 0
    assert doc["usage"]["completion_tokens"] > 0
    r = api(site, "POST", "/v1/generate-text", key, json={"request_id": doc["request_id"]})
    assert r.status_code == 200 and r.json() == doc, r.text
    r = api(
        site,
        "POST",
        "/v1/generate-text",
        key,
        json={"request_id": doc["request_id"], "wait_for_result": True},
    )
    assert r.status_code == 200 and r.json() == doc, r.text


# 2. Credits on PostgreSQL -------------------------------------------------------------------


def test_credits_charged_equal_cost_and_insufficient_credits_change_nothing(site):
    require_services()
    key, poor_key = site.keys["main"], site.keys["poor"]
    before = balance(site, "main")
    poor_before = api(site, "GET", "/v1/user/profile", poor_key).json()
    assert Decimal(poor_before["balance"]) == Decimal("0.0001"), poor_before

    r = submit(site, key, wait_for_result=True)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "success", doc
    cost = Decimal(doc["cost"])
    assert cost > 0

    r = submit(site, poor_key)
    assert r.status_code == 402, r.text
    assert r.json()["error"]["code"] == "insufficient_credits", r.text

    after = balance(site, "main")
    assert before - after == cost

    # The hold is released once the job is done; the refused one held nothing, made no job.
    profile = api(site, "GET", "/v1/user/profile", key).json()
    assert Decimal(profile["available"]) == Decimal(profile["balance"]) == after
    assert api(site, "GET", "/v1/user/profile", poor_key).json() == poor_before
    assert balance(site, "poor") == Decimal("0.0001")
    r = api(site, "GET", "/v1/requests", poor_key)
    assert r.status_code == 200 and r.json()["data"] == [], r.text


# 3. Ownership and authentication ------------------------------------------------------------


async def test_other_users_job_is_404_and_4404_bad_key_is_401_and_4401(site):
    require_services()
    key, other = site.keys["main"], site.keys["poor"]
    with worker_stopped(site):
        request_id = submit_ok(site, key)
        unknown = "00000000-0000-4000-8000-000000000000"
        for rid in (request_id, unknown):
            r = api(site, "GET", f"/v1/requests/{rid}", other)
            assert r.status_code == 404, r.text
            r = api(site, "POST", "/v1/generate-text", other, json={"request_id": rid})
            assert r.status_code == 404, r.text
            r = api(site, "POST", f"/v1/requests/{rid}/cancel", other)
            assert r.status_code == 404, r.text
        assert api(site, "GET", f"/v1/requests/{request_id}", key).json()["status"] == "pending"

        # Well formed, the right prefix, the wrong secret.
        bad = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
        r = api(site, "GET", f"/v1/requests/{request_id}", bad)
        assert r.status_code == 401, r.text
        r = api(site, "POST", "/v1/generate-text", bad, json={"request_id": request_id})
        assert r.status_code == 401, r.text

        cases = [(other, request_id, 4404), (other, unknown, 4404), (bad, request_id, 4401)]
        cases.append((None, request_id, 4401))
        for who, rid, expected in cases:
            async with ws_connect(site, rid, who) as ws:
                messages, code = await collect(ws)
            assert (messages, code) == ([], expected), (who, rid)
    # The owner's job was untouched by all that and runs normally.
    r = api(
        site,
        "POST",
        "/v1/generate-text",
        key,
        json={"request_id": request_id, "wait_for_result": True},
    )
    assert r.status_code == 200 and r.json()["status"] == "success", r.text


# 4. An idle websocket keeps its subscription ------------------------------------------------


async def test_websocket_idle_30s_still_receives_events(site):
    require_services()
    key = site.keys["main"]
    with worker_stopped(site) as worker:
        request_id = submit_ok(site, key)
        async with ws_connect(site, request_id, key) as ws:
            snapshot = await recv_json(ws)
            assert snapshot["type"] == "snapshot" and snapshot["job"]["status"] == "pending"
            await assert_silent(ws, 30)
            os.kill(worker.pid, signal.SIGCONT)
            messages, code = await collect(ws, timeout=10)
    check_full_stream(messages, code, request_id)


# 5. Mass disconnects leave no stale subscriptions ------------------------------------------


def _socket_inodes(pid) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            inodes.add(match.group(1))
    return inodes


def _local_ports_to(pid, remote_port: int) -> set[int]:
    """Local ports of the process's TCP connections to `remote_port` (Linux /proc)."""
    inodes = _socket_inodes(pid)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def redis_subscriptions_of(client, pid, redis_port) -> int:
    """How many pub/sub channels the process's Redis connections are subscribed to."""
    ports = _local_ports_to(pid, redis_port)
    total = 0
    for entry in client.client_list():
        if int(entry["addr"].rsplit(":", 1)[1]) in ports:
            total += int(entry.get("sub", 0))
    return total


async def test_500_websockets_disconnecting_at_once_leave_no_subscriptions(site):
    require_services()
    import redis

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs Linux /proc to find the server's Redis connections")
    client = redis.Redis.from_url(site.env["REDIS_URL"], socket_timeout=10)
    redis_port = client.connection_pool.connection_kwargs.get("port", 6379)
    daphne = daphne_process(site)
    key = site.keys["main"]
    count, batch = 500, 50

    with worker_stopped(site) as worker:
        request_id = submit_ok(site, key)
        group_channel = f"{site.env['PLAYGROUND_REDIS_PREFIX']}:asgi__group__job_{request_id}"
        baseline = redis_subscriptions_of(client, daphne.pid, redis_port)

        sockets = []
        try:
            started = time.monotonic()
            for _ in range(count // batch):
                assert time.monotonic() - started < 40, "opening the sockets took too long"
                opened = await asyncio.gather(
                    *(ws_connect(site, request_id, key) for _ in range(batch))
                )
                sockets.extend(opened)
                snapshots = await asyncio.gather(*(recv_json(ws) for ws in opened))
                assert all(
                    s["type"] == "snapshot" and s["job"]["status"] == "pending" for s in snapshots
                ), snapshots
            # The measurement sees them: one channel per consumer plus the job's group.
            during = redis_subscriptions_of(client, daphne.pid, redis_port)
            assert during >= baseline + count + 1, (baseline, during)
            assert client.pubsub_numsub(group_channel)[0][1] >= 1
        finally:
            # All at once: half close cleanly, half just drop the TCP connection.
            for ws in sockets[1::2]:
                ws.transport.abort()
            await asyncio.gather(*(ws.close() for ws in sockets[::2]), return_exceptions=True)

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = redis_subscriptions_of(client, daphne.pid, redis_port)
            numsub = client.pubsub_numsub(group_channel)[0][1]
            if after <= baseline and numsub == 0:
                break
            await asyncio.sleep(0.2)
        assert after == baseline, f"{after - baseline} subscriptions left over ({baseline=})"
        assert numsub == 0, f"the group {group_channel} is still subscribed"
        assert client.pubsub_channels(group_channel) == []

        # The server still serves a new websocket on that job, and the job runs normally.
        async with ws_connect(site, request_id, key) as ws:
            snapshot = await recv_json(ws)
            assert snapshot["type"] == "snapshot" and snapshot["job"]["status"] == "pending"
            os.kill(worker.pid, signal.SIGCONT)
            messages, code = await collect(ws)
    check_full_stream(messages, code, request_id)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if redis_subscriptions_of(client, daphne.pid, redis_port) == baseline:
            break
        await asyncio.sleep(0.1)
    assert redis_subscriptions_of(client, daphne.pid, redis_port) == baseline
    r = submit(site, key)
    assert r.status_code == 200, r.text


# 6. Regressions: subscriptions left by wait_for_result, a worker deaf to SIGTERM --------------


async def _settled_subscriptions(client, pid, redis_port, expected, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        count = redis_subscriptions_of(client, pid, redis_port)
        if count == expected or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.1)


async def test_wait_for_result_leaves_no_subscription_in_web_process(site):
    require_services()
    import redis

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs Linux /proc to find the server's Redis connections")
    client = redis.Redis.from_url(site.env["REDIS_URL"], socket_timeout=10)
    redis_port = client.connection_pool.connection_kwargs.get("port", 6379)
    daphne = daphne_process(site)
    key = site.keys["main"]
    before = redis_subscriptions_of(client, daphne.pid, redis_port)
    request_ids = []
    for _ in range(3):
        r = submit(site, key, wait_for_result=True)
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
        request_ids.append(r.json()["request_id"])
    body = {"request_id": request_ids[0], "wait_for_result": True}
    r = api(site, "POST", "/v1/generate-text", key, json=body)
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    after = await _settled_subscriptions(client, daphne.pid, redis_port, expected=before)
    assert after == before, f"{after - before} subscriptions left by 4 wait_for_result calls"


def test_idle_worker_exits_promptly_on_sigterm(site):
    # Last in the module: it ends the site's worker.
    require_services()
    key = site.keys["main"]
    r = submit(site, key, wait_for_result=True)
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    time.sleep(0.5)  # back to waiting for the next job
    worker = worker_process(site)
    worker.terminate()
    try:
        worker.wait(8)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(5)
        pytest.fail("the idle worker was still running 8 s after SIGTERM")
    assert worker.returncode == 0, site.log("worker0")[-3000:]


def test_inline_upstream_jobs_are_not_capped_by_the_connection_pool(tmp_path):
    """A web process runs upstream chat jobs itself; while the upstream answers (minutes, for
    a real model) the job holds no database connection, so a pool of one serves three."""
    require_services()
    from tests.fake_openai import FakeOpenAI

    fake = FakeOpenAI().start()
    fake.chunk_delay = 0.4  # four chunks: ~1.2 s per answer
    live = start_site(
        tmp_path, services=True, workers=1, extra_env={"PLAYGROUND_DB_POOL_SIZE": "1"}
    )
    try:
        live.manage(
            "models", "add-openai", "slow", "--base-url", fake.base_url,
            "--upstream-model", "fake", "--per-1k-output", "1",
        )  # fmt: skip
        key = live.user_with_key("pool@example.com", "100")
        body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}

        def complete(_):
            return httpx.post(
                live.base_url + "/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
                timeout=60,
            )

        with ThreadPoolExecutor(3) as pool:
            responses = list(pool.map(complete, range(3)))
        assert [r.status_code for r in responses] == [200, 200, 200], responses[0].text
        assert {r.json()["choices"][0]["message"]["content"] for r in responses} == {
            "Hello, world!"
        }
        assert fake.most_in_flight == 3
    finally:
        live.stop()
        fake.close()
