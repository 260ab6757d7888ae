"""API throughput: submit and poll beside a bare Django async JSON view, on the same server.

    .venv/bin/python bench/api.py [--mode embedded|services|both] [--connections 50]
                                  [--rounds 5] [--seconds 2]

Three kinds of request take turns in short rounds (bare, submit, poll, bare, …), each with
--connections keep-alive connections busy for --seconds:
  bare    GET /healthz: an async Django view returning a small JSON document (no auth, no db)
  submit  POST /v1/generate-text {"model": "trigram-pydoc", "prompt": …, "max_tokens": 1}
  poll    GET /v1/requests/{id} of a finished job
The key is on the `pro` tier with its budgets raised (PLAYGROUND_RATE_TIERS), so every request
is counted by the rate limiter (memory in embedded mode, Redis in services mode) and none is
refused. After each submit round the bench waits for the engine to finish the jobs it made,
so every round starts on an idle site. Figures: medians over rounds of requests/s, latency
percentiles over all requests, and the median Server-Timing split of submits and polls.
Target: submit ≥ 50 % of the bare view's requests/s.
"""

import argparse
import asyncio
import re
import secrets
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench._common import MODEL, PROMPT, Site, modes_for, percentile, print_table
from bench._load import load_round, median

KINDS = ("bare", "submit", "poll")
TARGET = 0.5
RAISED = "pro:100000000/1000000000"


def spans(header: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"(\w+);dur=([\d.]+)", header or "")}


def wait_idle(site: Site, headers: dict, timeout: float = 120) -> float:
    """Seconds until the site has no pending or running job."""
    start = time.monotonic()
    with httpx.Client(base_url=site.base_url, headers=headers, timeout=30) as http:
        while time.monotonic() - start < timeout:
            busy = sum(
                len(http.get(f"/v1/requests?status={s}&limit=1").json()["data"])
                for s in ("pending", "running")
            )
            if not busy:
                return time.monotonic() - start
            time.sleep(0.2)
    raise RuntimeError("the engine did not drain in time")


async def run_site(site: Site, args) -> dict:
    key = site.live.user_with_key(f"api-{secrets.token_hex(4)}@example.com", "1000000", "pro")
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=site.base_url, headers=headers, timeout=60) as http:
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 1, "wait_for_result": True}
        done = http.post("/v1/generate-text", json=body).json()
    host, port = site.base_url.removeprefix("http://").split(":")
    port = int(port)
    submit_body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 1}
    requests = {
        "bare": lambda: ("GET", "/healthz", {}, None),
        "submit": lambda: ("POST", "/v1/generate-text", headers, submit_body),
        "poll": lambda: ("GET", f"/v1/requests/{done['request_id']}", headers, None),
    }
    result = {k: {"rates": [], "latencies": [], "errors": {}, "timing": []} for k in KINDS}
    for kind in KINDS:  # warm-up
        await load_round(host, port, 8, 0.5, requests[kind])
    wait_idle(site, headers)
    for round_no in range(args.rounds):
        for kind in KINDS:
            tally = result[kind]

            def keep(response_headers, payload, tally=tally):
                if "server-timing" in response_headers:
                    tally["timing"].append(spans(response_headers["server-timing"]))

            ok, errors, latencies, elapsed = await load_round(
                host, port, args.connections, args.seconds, requests[kind], keep
            )
            tally["rates"].append(ok / elapsed)
            tally["latencies"] += latencies
            for name, count in errors.items():
                tally["errors"][name] = tally["errors"].get(name, 0) + count
            if kind == "submit":
                wait_idle(site, headers)
        print(f"  {site.mode}: round {round_no + 1}/{args.rounds}", flush=True)
    return result


def report(mode: str, result: dict, args) -> None:
    print(
        f"\n[{mode}] {args.connections} connections, {args.rounds} rounds of {args.seconds:g} s "
        "per kind (req/s: median of rounds, min–max; latency over all requests)"
    )
    rows = []
    for kind, label in zip(
        KINDS,
        ("GET /healthz (bare async view)", "POST /v1/generate-text", "GET /v1/requests/{id}"),
        strict=True,
    ):
        t = result[kind]
        lat = t["latencies"]
        rows.append(
            [
                f"{kind}: {label}",
                f"{median(t['rates']):.0f}",
                f"{min(t['rates']):.0f}–{max(t['rates']):.0f}",
                f"{percentile(lat, 50):.1f}" if lat else "-",
                f"{percentile(lat, 99):.1f}" if lat else "-",
                str(len(lat)),
                ", ".join(f"{k}: {v}" for k, v in t["errors"].items()) or "0",
            ]
        )
    print_table(["requests", "req/s", "rounds", "p50 ms", "p99 ms", "n", "errors"], rows)
    ratios = [
        s / b for s, b in zip(result["submit"]["rates"], result["bare"]["rates"], strict=True)
    ]
    ratio = median(ratios)
    verdict = "ok" if ratio >= TARGET else "MISS"
    print(f"submit/bare = {ratio:.3f} (median of rounds; target ≥ {TARGET:g}: {verdict})")
    for kind in ("submit", "poll"):
        timing = result[kind]["timing"]
        if timing:
            names = ["auth", "limits", "db", "queue", "app"]
            split = ", ".join(f"{n} {median([t.get(n, 0.0) for t in timing]):.2f}" for n in names)
            print(f"Server-Timing median ms, {kind}: {split}")


async def main_async(args) -> int:
    sites = {}
    try:
        for mode in modes_for(args.mode):
            print(f"starting {mode} site …", flush=True)
            sites[mode] = Site(mode, extra_env={"PLAYGROUND_RATE_TIERS": RAISED})
        results = {mode: await run_site(site, args) for mode, site in sites.items()}
    finally:
        for site in sites.values():
            site.close()
    for mode, result in results.items():
        report(mode, result, args)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["embedded", "services", "both"], default="both")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
