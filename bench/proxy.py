"""OpenAI-compatible proxy overhead: a chat completion through Playground vs the upstream direct.

    .venv/bin/python bench/proxy.py [--mode embedded|services|both] [--requests 100]
                                    [--concurrency 20] [--rounds 5] [--seconds 2]

The upstream is tests/fake_openai.py in its own process (answers at once, 4 content chunks).
Playground knows it as an operator model (`models add-openai`, priced per token), and the key
is on the `pro` tier with raised budgets: every proxied request is a job, held and billed,
counted by the rate limiter, with its events published.
  concurrency 1, non-streaming: p50 of the whole request, proxied − direct (target ≤ 8 ms)
  concurrency 1, streaming: time to the first chunk with content, proxied − direct (≤ 8 ms)
  concurrency --concurrency, non-streaming: completions/s through the one web process
    (target ≥ 230/s), beside the upstream's own rate at that concurrency
Beside both, the floor: a bare Django view on daphne that only forwards the request to the
same upstream (bench/floor_app.py: no key, no job, no billing, no events), the most any
Django view can do on this machine; "of floor" is Playground's share of it.
Direct, floor and proxied requests alternate one by one (concurrency 1) or round by round, so
machine noise hits all alike.
"""

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench._common import ROOT, Site, modes_for, percentile, print_table
from bench._load import Connection, load_round, median
from tests.live import free_port, wait_http

RAISED = "pro:100000000/1000000000"
TARGET_ADDED_MS = 8.0
TARGET_RATE = 230.0
UPSTREAM = """
import sys, time
sys.path.insert(0, {root!r})
from tests import fake_openai
# Small SSE writes must not wait for delayed ACKs (Nagle): the direct figures would be 40 ms.
fake_openai._Handler.disable_nagle_algorithm = True
fake = fake_openai.FakeOpenAI().start()
print(fake.base_url, flush=True)
time.sleep(3600)
"""


def start_floor(upstream: str) -> tuple[subprocess.Popen, str]:
    """bench/floor_app.py on daphne, on a free port, proxying to `upstream`."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-p", str(port), "--access-log", os.devnull]
        + ["bench.floor_app:application"],
        cwd=ROOT,
        env={**os.environ, "FLOOR_UPSTREAM": upstream},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/", proc)
    except RuntimeError:
        proc.kill()
        raise
    return proc, url


def start_upstream() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", UPSTREAM.format(root=str(ROOT))],
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, proc.stdout.readline().strip()


def body(model: str, stream: bool = False) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 16,
        "stream": stream,
    }


def split(url: str) -> tuple[str, int, str]:
    """(host, port, path prefix) of http://host:port/prefix."""
    rest = url.removeprefix("http://")
    hostport, _, prefix = rest.partition("/")
    host, port = hostport.split(":")
    return host, int(port), "/" + prefix if prefix else ""


async def first_content(client: httpx.AsyncClient, url: str, payload: dict, headers) -> float:
    """ms from sending a streaming request to its first chunk with content."""
    t0 = time.perf_counter()
    async with client.stream("POST", url, json=payload, headers=headers) as response:
        lines = response.aiter_lines()
        async for line in lines:
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            choices = chunk.get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                elapsed = (time.perf_counter() - t0) * 1000
                async for _ in lines:
                    pass
                return elapsed
    raise RuntimeError(f"no content chunk from {url}")


async def run_site(site: Site, upstream: str, floor: str, args) -> dict:
    name = "proxied-" + secrets.token_hex(3)
    site.live.manage(
        "models",
        "add-openai",
        name,
        "--base-url",
        upstream,
        "--upstream-model",
        "fake",
        "--per-1k-input",
        "0.01",
        "--per-1k-output",
        "0.02",
    )
    key = site.live.user_with_key(f"proxy-{secrets.token_hex(4)}@example.com", "1000000", "pro")
    headers = {"Authorization": f"Bearer {key}"}
    up_host, up_port, up_prefix = split(upstream)
    pg_host, pg_port, _ = split(site.base_url)
    fl_host, fl_port, _ = split(floor)
    direct_path, proxied_path = f"{up_prefix}/chat/completions", "/v1/chat/completions"
    # kind: (host, port, path, headers, model)
    targets = {
        "direct": (up_host, up_port, direct_path, {}, "fake"),
        "floor": (fl_host, fl_port, proxied_path, {}, "fake"),
        "proxied": (pg_host, pg_port, proxied_path, headers, name),
    }
    out = {kind: [] for kind in targets} | {"direct_ttfc": [], "proxied_ttfc": []}
    conns = {kind: Connection(host, port) for kind, (host, port, *_) in targets.items()}
    for _ in range(10):  # warm-up
        for kind, (_, _, path, hdrs, model) in targets.items():
            status, _, payload = await conns[kind].request("POST", path, hdrs, body(model))
            if status != 200:
                raise RuntimeError(f"{kind} request: {status} {payload[:300]!r}")
    for _ in range(args.requests):
        for kind, (_, _, path, hdrs, model) in targets.items():
            t0 = time.perf_counter()
            status, _, _ = await conns[kind].request("POST", path, hdrs, body(model))
            if status == 200:
                out[kind].append((time.perf_counter() - t0) * 1000)
    for conn in conns.values():
        await conn.close()
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(args.requests // 2):
            out["direct_ttfc"].append(
                await first_content(client, upstream + "/chat/completions", body("fake", True), {})
            )
            out["proxied_ttfc"].append(
                await first_content(client, site.base_url + proxied_path, body(name, True), headers)
            )
    rates = {kind: [] for kind in targets}
    errors: dict[str, int] = {}
    latencies = []
    for _ in range(args.rounds):
        for kind, (host, port, path, hdrs, model) in targets.items():

            def make(path=path, hdrs=hdrs, model=model):
                return "POST", path, hdrs, body(model)

            ok, errs, lat, elapsed = await load_round(
                host, port, args.concurrency, args.seconds, make
            )
            rates[kind].append(ok / elapsed)
            if kind == "proxied":
                latencies += lat
                for k, v in errs.items():
                    errors[k] = errors.get(k, 0) + v
    out.update(rates=rates, errors=errors, latencies=latencies)
    return out


def report(mode: str, r: dict, args) -> None:
    print(f"\n[{mode}] chat completion, fake upstream in its own process")
    kinds = ("direct", "floor", "proxied", "direct_ttfc", "proxied_ttfc")
    p50 = {k: percentile(r[k], 50) for k in kinds}
    p99 = {k: percentile(r[k], 99) for k in kinds}
    added = p50["proxied"] - p50["direct"]
    added_ttfc = p50["proxied_ttfc"] - p50["direct_ttfc"]
    rate = median(r["rates"]["proxied"])
    floor_rate = median(r["rates"]["floor"])

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISS"

    rows = [
        [
            "concurrency 1, whole request (ms)",
            f"{p50['direct']:.1f} / {p99['direct']:.1f}",
            f"{p50['floor']:.1f} / {p99['floor']:.1f}",
            f"{p50['proxied']:.1f} / {p99['proxied']:.1f}",
            f"+{added:.1f}",
            f"≤ {TARGET_ADDED_MS:g}: {verdict(added <= TARGET_ADDED_MS)}",
        ],
        [
            "concurrency 1, first content chunk (ms)",
            f"{p50['direct_ttfc']:.1f} / {p99['direct_ttfc']:.1f}",
            "",
            f"{p50['proxied_ttfc']:.1f} / {p99['proxied_ttfc']:.1f}",
            f"+{added_ttfc:.1f}",
            f"≤ {TARGET_ADDED_MS:g}: {verdict(added_ttfc <= TARGET_ADDED_MS)}",
        ],
        [
            f"concurrency {args.concurrency}, completions/s",
            f"{median(r['rates']['direct']):.0f}",
            f"{floor_rate:.0f}",
            f"{rate:.0f}",
            "",
            f"≥ {TARGET_RATE:g}: {verdict(rate >= TARGET_RATE)}",
        ],
    ]
    print_table(["figure (p50 / p99)", "direct", "floor", "proxied", "added", "target"], rows)
    print(
        f"floor (bare Django proxy view): adds +{p50['floor'] - p50['direct']:.1f} ms at "
        f"concurrency 1; proxied/floor completions/s = {rate / floor_rate:.2f} "
        f"(rounds: floor {min(r['rates']['floor']):.0f}–{max(r['rates']['floor']):.0f}/s)"
    )
    lat = r["latencies"]
    if lat:
        print(
            f"proxied at concurrency {args.concurrency}: p50 {percentile(lat, 50):.1f} ms, "
            f"p99 {percentile(lat, 99):.1f} ms, rounds "
            f"{min(r['rates']['proxied']):.0f}–{max(r['rates']['proxied']):.0f}/s, "
            f"errors {r['errors'] or 0}"
        )


async def main_async(args) -> int:
    proc, upstream = start_upstream()
    floor_proc, floor = start_floor(upstream)
    sites = {}
    try:
        for mode in modes_for(args.mode):
            print(f"starting {mode} site …", flush=True)
            sites[mode] = Site(mode, extra_env={"PLAYGROUND_RATE_TIERS": RAISED})
        results = {}
        for mode, site in sites.items():
            results[mode] = await run_site(site, upstream, floor, args)
    finally:
        for site in sites.values():
            site.close()
        proc.terminate()
        floor_proc.terminate()
    for mode, result in results.items():
        report(mode, result, args)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["embedded", "services", "both"], default="both")
    parser.add_argument("--requests", type=int, default=100, help="per kind at concurrency 1")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
