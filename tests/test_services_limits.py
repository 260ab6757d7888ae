"""Rate limits hold exactly across web processes (services mode: counters in Redis)."""

import asyncio
import sys

import httpx
import pytest

from tests.live import free_port, require_services, start_site, wait_http

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory):
    require_services()
    site = start_site(tmp_path_factory.mktemp("limits"), services=True, workers=1)
    try:
        port = free_port()
        second = site.start_process(
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "playground.asgi:application",
            log_name="daphne2",
        )
        wait_http(f"http://127.0.0.1:{port}/healthz", second)
        site.manage("users", "add", "free@example.com", "--credits", "100", "--tier", "free")
        site.free_key = site.manage("apikey", "create", "free@example.com").stdout.strip()
        yield site, [site.base_url, f"http://127.0.0.1:{port}"]
    finally:
        site.stop()


async def test_submit_budget_is_exact_across_two_web_processes(two_servers):
    site, urls = two_servers
    headers = {"Authorization": f"Bearer {site.free_key}"}
    body = {"model": "trigram-pydoc", "prompt": "x", "max_tokens": 1}

    async with httpx.AsyncClient(timeout=30) as client:

        async def one(i):
            r = await client.post(f"{urls[i % 2]}/v1/generate-text", json=body, headers=headers)
            return r.status_code, r.headers.get("X-RateLimit-Remaining")

        results = await asyncio.gather(*(one(i) for i in range(40)))
    codes = [code for code, _ in results]
    assert codes.count(200) == 20 and codes.count(429) == 20, codes
    remaining = sorted(int(r) for code, r in results if code == 200)
    assert remaining == list(range(20))  # each accepted submit saw its own count
