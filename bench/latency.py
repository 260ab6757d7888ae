"""Job latency of the built-in text model, seen by an API client.

    .venv/bin/python bench/latency.py [--mode embedded|services|both] [--jobs 200] [--tokens 16]

For each job (one at a time, after warm-up jobs) the client
  1. sends POST /v1/generate-text                                     t = 0
  2. on the response (request_id) opens ws://…/ws/jobs/<id>/ with its Bearer key
     (no Origin) on a TCP connection opened before step 1,
  3. records when each message arrives: the snapshot (first event), the `status running`
     event, the first `delta`, and the `result` event (success).
Then, with `wait_for_result: true`, one HTTP round trip per job: t = 0 → final document.
The database's microsecond `created`, `started_at`, `finished_at` of each job (same clock,
same machine) split the websocket figure into server-side stages.

With --mode both the two sites run side by side and the jobs alternate between them in
short rounds, so machine noise hits both alike; ratios services/embedded are printed.
"""

import argparse
import asyncio
import json
import random
import socket
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from websockets.asyncio.client import connect

from bench._common import MODEL, PROMPT, Site, fmt_ms, modes_for, print_table, summary

# Targets for services mode (ms): (metric, statistic) -> limit.
TARGETS = {("first", "p50"): 15.0, ("first", "p99"): 60.0, ("success", "p50"): 40.0}
METRICS = [
    ("submit", "POST answered (request_id)"),
    ("ws_open", "websocket handshake done"),
    ("first", "first event (snapshot)"),
    ("running", "`status running` event"),
    ("delta", "first `delta` event"),
    ("success", "`result` event (success)"),
    ("join", "POST answered → first event"),
    ("wait", "wait_for_result: true"),
]
STAGES = [
    ("submit→created", "t0 → Job row built (view, auth, validation)"),
    ("created→started", "insert+hold+commit, enqueue, broker, worker pick-up"),
    ("started→finished", "running UPDATE, 16 tokens (SET+PUBLISH each), compute"),
    ("finished→result", "finish UPDATE+settle, result PUBLISH, daphne, websocket"),
]


def body(tokens: int, wait: bool = False) -> dict:
    data = {"model": MODEL, "prompt": PROMPT, "max_tokens": tokens}
    if wait:
        data["wait_for_result"] = True
    return data


async def preconnected_socket(site: Site) -> socket.socket:
    host, port = site.ws_url.removeprefix("ws://").split(":")
    sock = socket.socket()
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return sock


JOB_TIMEOUT = 30.0  # seconds: a job that never finishes fails the bench instead of hanging it


async def ws_job(site: Site, client: httpx.AsyncClient, tokens: int) -> dict:
    """One job over the websocket; times in ms from the moment the POST is sent."""
    async with asyncio.timeout(JOB_TIMEOUT):
        return await _ws_job(site, client, tokens)


async def _ws_job(site: Site, client: httpx.AsyncClient, tokens: int) -> dict:
    sock = await preconnected_socket(site)
    t0_wall = time.time()
    t0 = time.perf_counter()

    def ms() -> float:
        return (time.perf_counter() - t0) * 1000

    try:
        r = await client.post("/v1/generate-text", json=body(tokens), headers=site.headers)
        r.raise_for_status()
    except BaseException:
        sock.close()
        raise
    rec = {"submit": ms(), "t0_wall": t0_wall}
    rid = r.json()["request_id"]
    rec["request_id"] = rid
    uri = f"{site.ws_url}/ws/jobs/{rid}/"
    async with connect(uri, additional_headers=site.headers, sock=sock, compression=None) as ws:
        rec["ws_open"] = ms()
        async for raw in ws:
            now = ms()
            msg = json.loads(raw)
            kind = msg.get("type")
            if kind == "snapshot":
                rec["first"] = now
                rec["snapshot_status"] = msg["job"]["status"]
                if msg["job"]["status"] == "success":
                    rec["success"] = now
            elif kind == "status" and msg.get("status") == "running":
                rec["running"] = now
            elif kind == "delta":
                rec.setdefault("delta", now)
            elif kind == "result":
                rec["success"] = now
                rec["result_status"] = msg["job"]["status"]
                break
    if "success" not in rec or rec.get("result_status", "success") != "success":
        raise RuntimeError(f"job {rid}: no successful result event ({rec})")
    rec["join"] = rec["first"] - rec["submit"]
    return rec


async def wait_job(site: Site, client: httpx.AsyncClient, tokens: int) -> dict:
    t0 = time.perf_counter()
    r = await client.post("/v1/generate-text", json=body(tokens, wait=True), headers=site.headers)
    elapsed = (time.perf_counter() - t0) * 1000
    r.raise_for_status()
    doc = r.json()
    if doc.get("status") != "success":
        raise RuntimeError(f"wait_for_result gave {r.status_code} {doc}")
    return {"wait": elapsed}


def server_stages(site: Site, records: list[dict]) -> dict[str, list[float]]:
    times = site.job_times([r["request_id"] for r in records])
    stages: dict[str, list[float]] = {name: [] for name, _ in STAGES}
    for rec in records:
        stamps = times.get(rec["request_id"])
        if not stamps:
            continue
        created, started, finished = ((s - rec["t0_wall"]) * 1000 for s in stamps)
        stages["submit→created"].append(created)
        stages["created→started"].append(started - created)
        stages["started→finished"].append(finished - started)
        stages["finished→result"].append(rec["success"] - finished)
    return stages


async def run(args) -> int:
    modes = modes_for(args.mode)
    sites: dict[str, Site] = {}
    try:
        for mode in modes:
            print(f"starting {mode} site …", flush=True)
            sites[mode] = Site(mode)
        limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
        clients = {
            m: httpx.AsyncClient(base_url=s.base_url, timeout=JOB_TIMEOUT, limits=limits)
            for m, s in sites.items()
        }
        ws_records: dict[str, list[dict]] = {m: [] for m in sites}
        wait_records: dict[str, list[dict]] = {m: [] for m in sites}
        for mode, site in sites.items():
            # Warm-up: trains the model in daphne (hold) and in each worker process.
            for _ in range(args.warmup):
                await ws_job(site, clients[mode], args.tokens)
                await wait_job(site, clients[mode], args.tokens)
        done = 0
        started = time.monotonic()
        while done < args.jobs:
            n = min(args.round, args.jobs - done)
            for mode, site in sites.items():
                for _ in range(n):
                    ws_records[mode].append(await ws_job(site, clients[mode], args.tokens))
                    await asyncio.sleep(random.uniform(0, 2 * args.pause))
                for _ in range(n):
                    wait_records[mode].append(await wait_job(site, clients[mode], args.tokens))
                    await asyncio.sleep(random.uniform(0, 2 * args.pause))
            done += n
            print(f"  {done}/{args.jobs} jobs per mode and kind", end="\r", flush=True)
        print(f"\nmeasured in {time.monotonic() - started:.1f} s", flush=True)
        for c in clients.values():
            await c.aclose()
        stages = {m: server_stages(sites[m], ws_records[m]) for m in sites}
        report(args, ws_records, wait_records, stages)
    finally:
        for site in sites.values():
            site.close()
    return 0


def report(args, ws_records, wait_records, stages) -> None:
    modes = list(ws_records)
    print(
        f"\nLatency, {MODEL}, max_tokens {args.tokens}, {args.jobs} jobs per mode "
        f"(ms from sending POST /v1/generate-text; one job at a time)"
    )
    stats = {}
    for mode in modes:
        recs = ws_records[mode] + wait_records[mode]
        stats[mode] = {
            key: summary([r[key] for r in recs if r.get(key) is not None]) for key, _ in METRICS
        }
        snaps = {}
        for r in ws_records[mode]:
            snaps[r["snapshot_status"]] = snaps.get(r["snapshot_status"], 0) + 1
        stats[mode]["snapshots"] = snaps
    for mode in modes:
        print(f"\n[{mode}]  snapshot status when the websocket joined: {stats[mode]['snapshots']}")
        rows = []
        for key, label in METRICS:
            s = stats[mode][key]
            if not s:
                rows.append([f"{key}: {label}", "0", "-", "-", "-", "-", ""])
                continue
            target = []
            for q in ("p50", "p99"):
                limit = TARGETS.get((key, q))
                if limit is not None and mode == "services":
                    verdict = "ok" if s[q] <= limit else "MISS"
                    target.append(f"{q}≤{limit:g} {verdict}")
            rows.append(
                [
                    f"{key}: {label}",
                    str(s["n"]),
                    fmt_ms(s["p50"]),
                    fmt_ms(s["p90"]),
                    fmt_ms(s["p99"]),
                    fmt_ms(s["max"]),
                    ", ".join(target),
                ]
            )
        print_table(["figure", "n", "p50", "p90", "p99", "max", "target (services)"], rows)
        rows = []
        for name, label in STAGES:
            s = summary(stages[mode][name])
            if s:
                rows.append(
                    [f"{name}: {label}", fmt_ms(s["p50"]), fmt_ms(s["p90"]), fmt_ms(s["p99"])]
                )
        if rows:
            print("  server-side split of the websocket jobs (database timestamps):")
            print_table(["stage", "p50", "p90", "p99"], rows)
    if len(modes) == 2:
        a, b = modes
        print(f"\nratio {b}/{a} (p50, p99):")
        for key, _ in METRICS:
            sa, sb = stats[a][key], stats[b][key]
            if sa and sb:
                print(f"  {key:8s} {sb['p50'] / sa['p50']:6.2f}x  {sb['p99'] / sa['p99']:6.2f}x")
    print()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["embedded", "services", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=200, help="measured jobs per mode and kind")
    parser.add_argument("--tokens", type=int, default=16, help="max_tokens of each job")
    parser.add_argument("--warmup", type=int, default=6, help="warm-up jobs per mode and kind")
    parser.add_argument("--round", type=int, default=10, help="jobs per mode before switching")
    parser.add_argument(
        "--pause",
        type=float,
        default=0.05,
        help="mean seconds between jobs (uniform 0..2×): a fixed pause would lock the jobs "
        "to the phase of any periodic timer in the server",
    )
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
