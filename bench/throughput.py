"""Submit throughput of POST /v1/generate-text against the bare JSON view GET /healthz.

    .venv/bin/python bench/throughput.py [--mode embedded|services|both] [--seconds 10]
                                         [--concurrency 8] [--round 1.0]

One httpx AsyncClient per site keeps at most --concurrency requests in flight (one keep-alive
connection each). Short rounds of each kind alternate (healthz, submit, healthz, submit, …;
with --mode both the sites take turns too) until each kind has had --seconds of load, so
machine noise hits every figure alike. A submit only creates the job: the site's engine runs
it afterwards. After every submit round the bench waits until the engine has finished the
backlog (the drain), so that the next round starts on an idle site; the drain time gives the
engine's own throughput (jobs finished per second of submit round + drain).
"""

import argparse
import asyncio
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench._common import MODEL, PROMPT, Site, fmt_ms, modes_for, print_table, summary

KINDS = ("healthz", "submit")


class Tally:
    def __init__(self):
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.seconds = 0.0
        self.latencies: list[float] = []
        self.rounds: list[float] = []  # requests/s of each round
        self.jobs = 0
        self.drain_seconds = 0.0

    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


async def one_round(site: Site, client: httpx.AsyncClient, kind: str, seconds: float, conc: int):
    """Keep `conc` requests of `kind` in flight for `seconds`; returns (ok, errors, lat, secs)."""
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 16}
    errors: dict[str, int] = {}
    latencies: list[float] = []
    ok = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def loop():
        nonlocal ok
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            try:
                if kind == "healthz":
                    r = await client.get("/healthz")
                else:
                    r = await client.post("/v1/generate-text", json=body, headers=site.headers)
            except httpx.HTTPError as exc:
                name = type(exc).__name__
                errors[name] = errors.get(name, 0) + 1
                continue
            if r.status_code == 200:
                ok += 1
                latencies.append((time.perf_counter() - t) * 1000)
            else:
                errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1

    await asyncio.gather(*(loop() for _ in range(conc)))
    return ok, errors, latencies, time.perf_counter() - start


async def drain(site: Site, client: httpx.AsyncClient, timeout: float = 120) -> float:
    """Wait until the site has no pending or running job; returns the seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        busy = False
        for status in ("pending", "running"):
            r = await client.get(
                "/v1/requests", params={"status": status, "limit": 1}, headers=site.headers
            )
            r.raise_for_status()
            busy = busy or bool(r.json()["data"])
        if not busy:
            return time.perf_counter() - start
        await asyncio.sleep(0.05)
    raise RuntimeError(
        f"{site.mode}: jobs still pending or running after {timeout} s; if another site or test "
        f"run used the same Redis db ({site.live.env.get('REDIS_URL')}) it took the jobs: "
        "run again (see README, Caveats)"
    )


# Each in-flight services-mode submit can leave a PostgreSQL connection open (see README):
# more than this many in flight can exhaust the shared server's max_connections.
SAFE_CONCURRENCY = 16


async def run(args) -> int:
    modes = modes_for(args.mode)
    if "services" in modes and args.concurrency > SAFE_CONCURRENCY and not args.force:
        raise SystemExit(
            f"--concurrency {args.concurrency} > {SAFE_CONCURRENCY} in services mode can exhaust "
            "PostgreSQL's max_connections (shared with everyone on this machine); "
            "add --force if that is what you want"
        )
    sites: dict[str, Site] = {}
    try:
        for mode in modes:
            print(f"starting {mode} site …", flush=True)
            sites[mode] = Site(mode, credits="100000", workers=args.workers)
        limits = httpx.Limits(
            max_connections=args.concurrency, max_keepalive_connections=args.concurrency
        )
        clients = {
            m: httpx.AsyncClient(base_url=s.base_url, timeout=60, limits=limits)
            for m, s in sites.items()
        }
        tallies = {(m, k): Tally() for m in sites for k in KINDS}
        # Warm-up: connections, the trigram model in daphne and in the worker processes.
        for mode, site in sites.items():
            for kind in KINDS:
                await one_round(site, clients[mode], kind, 0.5, args.concurrency)
            await drain(site, clients[mode])
        rounds = max(1, round(args.seconds / args.round))
        for i in range(rounds):
            for mode, site in sites.items():
                # Alternate which kind goes first, so neither always follows a drain.
                for kind in KINDS if i % 2 == 0 else reversed(KINDS):
                    tally = tallies[mode, kind]
                    ok, errors, lat, secs = await one_round(
                        site, clients[mode], kind, args.round, args.concurrency
                    )
                    tally.ok += ok
                    tally.seconds += secs
                    tally.latencies += lat
                    tally.rounds.append(ok / secs)
                    for name, n in errors.items():
                        tally.errors[name] = tally.errors.get(name, 0) + n
                    if kind == "submit":
                        tally.jobs += ok
                        tally.drain_seconds += await drain(site, clients[mode])
            print(f"  round {i + 1}/{rounds}", end="\r", flush=True)
        print()
        for c in clients.values():
            await c.aclose()
        report(args, tallies, list(sites))
    finally:
        for site in sites.values():
            site.close()
    return 0


def report(args, tallies, modes) -> None:
    print(
        f"\nThroughput, {args.concurrency} requests in flight, {args.seconds:g} s per kind "
        f"in rounds of {args.round:g} s (requests/s over all rounds; round min–max)"
    )
    rows = []
    for mode in modes:
        for kind in KINDS:
            t = tallies[mode, kind]
            lat = summary(t.latencies)
            rows.append(
                [
                    f"{mode}: {'POST /v1/generate-text' if kind == 'submit' else 'GET /healthz'}",
                    f"{t.rate():.1f}",
                    f"{min(t.rounds):.0f}–{max(t.rounds):.0f}",
                    fmt_ms(lat.get("p50")),
                    fmt_ms(lat.get("p99")),
                    str(t.ok),
                    ", ".join(f"{k}×{v}" for k, v in t.errors.items()) or "0",
                ]
            )
    print_table(["requests", "req/s", "rounds", "p50 ms", "p99 ms", "ok", "errors"], rows)
    print()
    for mode in modes:
        h, s = tallies[mode, "healthz"], tallies[mode, "submit"]
        ratio = s.rate() / h.rate() if h.rate() else float("nan")
        slower = h.rate() / s.rate() if s.rate() else float("inf")
        engine = s.jobs / (s.seconds + s.drain_seconds) if s.jobs else 0.0
        print(
            f"{mode}: submit/healthz = {ratio:.3f}  ({slower:.1f}x slower)   "
            f"engine: {s.jobs} jobs done in {s.seconds + s.drain_seconds:.1f} s "
            f"(submit {s.seconds:.1f} s + drain {s.drain_seconds:.1f} s) = {engine:.1f} jobs/s"
        )
    if len(modes) == 2:
        a, b = modes
        for kind in KINDS:
            ra, rb = tallies[a, kind].rate(), tallies[b, kind].rate()
            print(f"{kind}: {b}/{a} = {rb / ra:.2f}")
    print()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["embedded", "services", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=10, help="load seconds per kind")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--round", type=float, default=1.0, help="seconds per round")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (services)")
    parser.add_argument("--force", action="store_true", help="allow a risky --concurrency")
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
