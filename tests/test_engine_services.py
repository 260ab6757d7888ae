"""The engine against real worker processes (services mode): queues, cancel, a killed worker,
time limits, a lost queue message.

One site per module (tests/live.py), with no default worker: each test starts the workers it
needs with `manage.py worker --queues …`. The module's first worker takes `embedding` and
`upstream` only; the reaper (every 0.5 s here) runs in every worker.
"""

import os
import signal
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.live import require_services, start_site

pytestmark = pytest.mark.services

REAPER_ENV = {
    "PLAYGROUND_REAPER_INTERVAL": "0.5",
    "PLAYGROUND_REAPER_GRACE": "1",
    "PLAYGROUND_REQUEUE_AFTER": "3",
}
# Slow copies of the built-in trigram model (token_delay: seconds per token), each on its own
# queue with its own limits, so one test's worker never takes another test's jobs.
MODELS = """
from decimal import Decimal
from playground.models import AIModel
def slow(slug, **kw):
    kw.setdefault("config", {"token_delay": 0.05})
    AIModel.objects.create(slug=slug, name=slug, modality="text", backend="trigram",
                           per_1k_output=Decimal("0.02"), **kw)
slow("slow-cancel")
slow("slow-kill", queue="slow-kill", soft_time_limit=3, time_limit=4)
slow("slow-hard", queue="slow-hard", soft_time_limit=2, time_limit=3)
slow("lost", queue="lostq", config={})
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    require_services()
    site = start_site(
        tmp_path_factory.mktemp("engine"), services=True, workers=0, extra_env=REAPER_ENV
    )
    try:
        site.shell(MODELS)
        site.email = "engine@example.com"
        site.key = site.user_with_key(site.email, "50")
        site.workers = {
            "embed": site.start_worker("--queues", "embedding,upstream", log_name="embed")
        }
        yield site
    finally:
        for proc in site.processes:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        site.stop()


@pytest.fixture(scope="module")
def redis_client(site):
    import redis

    return redis.Redis.from_url(site.env["REDIS_URL"])


def queue_key(site, queue):
    """The Redis list holding a queue's messages (every key carries the site's prefix)."""
    return f"{site.env['PLAYGROUND_REDIS_PREFIX']}:{queue}"


def api(site, method, path, **kwargs):
    headers = {"Authorization": f"Bearer {site.key}"}
    return httpx.request(method, site.base_url + path, headers=headers, timeout=30, **kwargs)


def submit(site, model, max_tokens=16, **extra):
    body = {"model": model, "prompt": "How do generators work?", "max_tokens": max_tokens}
    r = api(site, "POST", "/v1/generate-text", json={**body, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def job(site, request_id):
    r = api(site, "GET", f"/v1/requests/{request_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(site, request_id, check, timeout=20.0):
    """Poll the job until `check(doc)`; returns that document."""
    deadline = time.monotonic() + timeout
    while True:
        doc = job(site, request_id)
        if check(doc):
            return doc
        if time.monotonic() > deadline:
            pytest.fail(f"job never reached the expected state; last: {doc}")
        time.sleep(0.1)


def generating(doc):
    return doc["status"] == "running" and len(doc.get("text", "")) > 0


def finished(doc):
    return doc["status"] in ("success", "failed", "canceled")


def balances(site):
    profile = api(site, "GET", "/v1/user/profile").json()
    return Decimal(profile["balance"]), Decimal(profile["available"])


def release_reason(site, request_id) -> str:
    return site.shell(
        "from billing.models import LedgerEntry\n"
        f"e = LedgerEntry.objects.get(job__request_id='{request_id}', kind='release')\n"
        "print(e.reason)\n"
        f"print(LedgerEntry.objects.filter(job__request_id='{request_id}', kind='capture').count())"
    )


def text_worker(site):
    if "text" not in site.workers:
        site.workers["text"] = site.start_worker(
            "--queues", "text", "--concurrency", "1", log_name="text"
        )
    return site.workers["text"]


# Routing -----------------------------------------------------------------------------------


def test_a_worker_takes_only_its_queues(site, redis_client):
    # The only worker takes embedding and upstream: a text job waits in the text queue.
    rid = submit(site, "trigram-pydoc")["request_id"]
    time.sleep(2)
    assert job(site, rid)["status"] == "pending"
    assert redis_client.llen(queue_key(site, "text")) >= 1
    # ... while that worker runs embedding jobs.
    r = api(site, "POST", "/v1/embeddings", json={"model": "hash-embed", "input": "hello"})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 256, r.text
    assert job(site, rid)["status"] == "pending"
    # A job canceled while it waits never starts.
    before = balances(site)
    canceled = submit(site, "trigram-pydoc")["request_id"]
    r = api(site, "POST", f"/v1/requests/{canceled}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
    assert balances(site) == before  # its hold released; the first job's still held
    # A worker for the text queue runs the first one, and only that.
    text_worker(site)
    doc = wait_for(site, rid, finished)
    assert doc["status"] == "success" and doc["text"].strip(), doc
    submit(site, "trigram-pydoc", wait_for_result=True)  # the canceled one's message is gone too
    assert job(site, canceled)["status"] == "canceled"
    assert (
        site.shell(
            "from playground.models import Job\n"
            f"print(Job.objects.get(request_id='{canceled}').started_at)"
        ).strip()
        == "None"
    )


# Cancel ------------------------------------------------------------------------------------


def test_cancel_a_running_trigram_job_stops_it(site):
    text_worker(site)  # one process: the next job can only run once this one stopped
    before = balances(site)
    rid = submit(site, "slow-cancel", max_tokens=400)["request_id"]  # 20 s of tokens
    wait_for(site, rid, generating)
    r = api(site, "POST", f"/v1/requests/{rid}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
    assert r.json()["cost"] == "0"
    started = time.monotonic()
    doc = submit(site, "trigram-pydoc", wait_for_result=True)
    assert doc["status"] == "success", doc
    assert time.monotonic() - started < 5, "the canceled job kept its worker busy"
    final = job(site, rid)
    assert final["status"] == "canceled" and final["cost"] == "0"
    balance, available = balances(site)
    assert balance == available == before[0] - Decimal(doc["cost"])


def test_cancel_a_running_upstream_job_closes_the_upstream_request(site, fake_openai):
    fake_openai.chunks = [f"word{i} " for i in range(400)]
    fake_openai.chunk_delay = 0.05  # 20 s of stream
    site.manage(
        "models",
        "add-openai",
        "fake-up",
        "--base-url",
        fake_openai.base_url,
        "--per-1k-output",
        "1",
    )
    before = balances(site)
    rid = submit(site, "fake-up", max_tokens=1000)["request_id"]
    wait_for(site, rid, generating)
    assert not fake_openai.disconnected.is_set()
    r = api(site, "POST", f"/v1/requests/{rid}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
    # The upstream sees its connection closed: its next write fails.
    assert fake_openai.disconnected.wait(5), "the upstream request was left open"
    final = job(site, rid)
    assert final["status"] == "canceled" and final["cost"] == "0"
    assert balances(site) == (before[0], before[0])


# A killed worker and the reaper ------------------------------------------------------------


def test_killed_worker_job_is_failed_by_the_reaper(site):
    # --pool solo: the job runs in the process we kill, so nothing is left to report it.
    worker = site.start_worker("--queues", "slow-kill", "--pool", "solo", log_name="kill")
    before = balances(site)
    rid = submit(site, "slow-kill", max_tokens=400)["request_id"]
    wait_for(site, rid, generating)
    assert balances(site)[1] < before[1]  # held
    worker.kill()
    worker.wait(5)
    started = time.monotonic()
    # Lost once past the model's hard limit (4 s) plus the grace (1 s) since it started.
    doc = wait_for(site, rid, finished, timeout=20)
    assert doc["status"] == "failed" and doc["error"]["code"] == "worker_lost", doc
    assert doc["cost"] == "0"
    assert time.monotonic() - started < 10
    assert balances(site) == (before[0], before[0])
    reason, captures = release_reason(site, rid).split("\n")[:2]
    assert "reaper" in reason and "worker lost" in reason and captures == "0"


def _children(pid) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_time_limits_soft_stops_the_job_hard_kills_a_stuck_one(site):
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs Linux /proc to find the worker's child process")
    worker = site.start_worker("--queues", "slow-hard", "--concurrency", "1", log_name="hard")
    before = balances(site)
    # Soft (2 s): the backend stops itself.
    rid = submit(site, "slow-hard", max_tokens=400)["request_id"]
    doc = wait_for(site, rid, finished)
    assert doc["status"] == "failed" and doc["error"]["code"] == "time_limit", doc
    assert "hard" not in doc["error"]["message"] and doc["cost"] == "0"

    # Hard (3 s): a job stuck where it cannot check (here: its process frozen) is killed.
    rid = submit(site, "slow-hard", max_tokens=400)["request_id"]
    wait_for(site, rid, generating)
    (child,) = _children(worker.pid)
    os.kill(child, signal.SIGSTOP)
    doc = wait_for(site, rid, finished)
    assert doc["status"] == "failed" and doc["error"]["code"] == "time_limit", doc
    assert "hard time limit of 3 s" in doc["error"]["message"] and doc["cost"] == "0"
    assert "hard time limit" in release_reason(site, rid)
    assert balances(site) == (before[0], before[0])
    # The worker replaced its killed process and runs the next job.
    doc = submit(site, "slow-hard", max_tokens=5, wait_for_result=True)
    assert doc["status"] == "success", doc


# A lost queue message ----------------------------------------------------------------------


def test_pending_job_whose_message_was_lost_is_requeued_and_runs_once(site, redis_client):
    rid = submit(site, "lost")["request_id"]
    key = queue_key(site, "lostq")
    assert redis_client.llen(key) == 1
    redis_client.delete(key)  # the broker lost it
    site.start_worker("--queues", "lostq", log_name="lost")
    # Only the reaper can send it again (its message is gone): once it is 3 s old
    # (PLAYGROUND_REQUEUE_AFTER). It then runs, exactly once.
    doc = wait_for(site, rid, finished, timeout=20)
    assert doc["status"] == "success", doc
    reason, captures = release_reason(site, rid).split("\n")[:2]
    assert captures == "1"
    resent_after = site.shell(
        "from playground.models import Job\n"
        f"job = Job.objects.get(request_id='{rid}')\n"
        "print((job.queued_at - job.created).total_seconds())"
    )
    assert float(resent_after) >= 3
