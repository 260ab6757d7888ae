"""Engine throughput and time to first event, with 1, 2 and 4 worker processes (services mode).

    .venv/bin/python bench/engine.py [--processes 1,2,4] [--jobs 40] [--rounds 3]
                                     [--first 20] [--tokens 16]

One services site per process count (each its own PostgreSQL database and Redis prefix, from
tests/live.py), each with one `manage.py worker --concurrency N` (N prefork processes running
jobs), all alive at once so that the rounds alternate between them and machine noise hits
every column alike.

Throughput, per round and site: the worker is frozen (SIGSTOP, its whole process tree), --jobs
jobs of the built-in text model are submitted, the worker is resumed, and the bench waits for
the backlog to drain. jobs/s = jobs / (last finished_at − first started_at), from the
database's own timestamps: the engine alone with a full queue, not the submit path.

Time to first event, per site on an idle engine: --first jobs one at a time (alternating
between sites), each timed from sending its POST to the websocket's `status running` event
(the engine picked it up) and its first `delta` (the first token), as bench/latency.py does.
"""

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench._common import MODEL, PROMPT, Site, fmt_ms, modes_for, print_table, summary
from bench.latency import ws_job

DRAIN_TIMEOUT = 120.0


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants (Linux /proc)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            children = task / "children"
            if children.exists():
                todo += [int(c) for c in children.read_text().split()]
    return pids


def signal_tree(pid: int, sig: int) -> None:
    for p in process_tree(pid):
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


class Engine:
    """One services site whose worker runs `processes` prefork processes."""

    def __init__(self, processes: int):
        self.processes = processes
        self.site = Site(
            "services",
            workers=1,
            worker_args=("--concurrency", str(processes), "--pool", "prefork"),
        )
        self.worker_pid = self.site.live.processes[1].pid
        self.rates: list[float] = []
        self.jobs = 0
        self.seconds = 0.0
        self.first: list[dict] = []

    def db(self):
        import psycopg

        return psycopg.connect(self.site.live.env["DATABASE_URL"], autocommit=True)

    async def submit(self, client: httpx.AsyncClient, count: int, tokens: int) -> list[str]:
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": tokens}
        ids: list[str] = []
        left = count

        async def one():
            nonlocal left
            while left > 0:
                left -= 1
                r = await client.post("/v1/generate-text", json=body, headers=self.site.headers)
                r.raise_for_status()
                ids.append(r.json()["request_id"])

        await asyncio.gather(*(one() for _ in range(8)))
        return ids

    def drain(self, ids: list[str]) -> tuple[float, float]:
        """Wait until these jobs are finished; (first started_at, last finished_at), epoch s."""
        sql = (
            "SELECT count(*) FILTER (WHERE status = 'success'), count(*) FILTER (WHERE status IN "
            "('failed', 'canceled')), min(started_at), max(finished_at) FROM playground_job "
            "WHERE request_id = ANY(%s::uuid[])"
        )
        deadline = time.monotonic() + DRAIN_TIMEOUT
        with self.db() as conn:
            while True:
                ok, bad, started, finished = conn.execute(sql, (ids,)).fetchone()
                if bad:
                    raise RuntimeError(f"{bad} job(s) failed on {self.processes} process(es)")
                if ok == len(ids):
                    return started.timestamp(), finished.timestamp()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{len(ids) - ok} job(s) still not done after drain")
                time.sleep(0.02)

    async def round(self, client: httpx.AsyncClient, jobs: int, tokens: int) -> float:
        signal_tree(self.worker_pid, signal.SIGSTOP)
        try:
            ids = await self.submit(client, jobs, tokens)
        finally:
            signal_tree(self.worker_pid, signal.SIGCONT)
        started, finished = await asyncio.to_thread(self.drain, ids)
        span = max(finished - started, 1e-6)
        return jobs / span, span

    def close(self):
        signal_tree(self.worker_pid, signal.SIGCONT)
        self.site.close()


async def run(args) -> int:
    modes_for("services")  # exits with a message without PostgreSQL and Redis
    counts = [int(n) for n in args.processes.split(",")]
    engines: list[Engine] = []
    try:
        for n in counts:
            print(f"starting a services site with {n} worker process(es) …", flush=True)
            engines.append(Engine(n))
        clients = {
            e.processes: httpx.AsyncClient(base_url=e.site.base_url, timeout=60) for e in engines
        }
        # Warm-up: every worker process trains the trigram model on its first job.
        for e in engines:
            await e.round(clients[e.processes], 4 * e.processes, args.tokens)
        for i in range(args.rounds):
            for e in engines if i % 2 == 0 else reversed(engines):
                rate, span = await e.round(clients[e.processes], args.jobs, args.tokens)
                e.rates.append(rate)
                e.jobs += args.jobs
                e.seconds += span
            print(f"  throughput round {i + 1}/{args.rounds}", end="\r", flush=True)
        print()
        for _ in range(args.first):
            for e in engines:
                e.first.append(await ws_job(e.site, clients[e.processes], args.tokens))
        for c in clients.values():
            await c.aclose()
        report(args, engines)
    finally:
        for e in engines:
            e.close()
    return 0


def first_event(rec: dict) -> float:
    """POST sent → the first websocket message showing the engine had the job: the snapshot
    if the job was no longer pending when the socket joined, else the first event after it."""
    if rec["snapshot_status"] != "pending":
        return rec["first"]
    return min(rec[k] for k in ("running", "delta", "success") if k in rec)


def first_delta(rec: dict) -> float | None:
    """POST sent → the first token, for jobs whose every event the socket saw live."""
    return rec.get("delta") if rec["snapshot_status"] == "pending" else None


def report(args, engines: list[Engine]) -> None:
    print(
        f"\nEngine, services mode, built-in {MODEL} ({args.tokens} tokens a job): "
        f"{args.rounds} rounds of {args.jobs} queued jobs; {args.first} single jobs for latency"
    )
    header = ["figure"] + [
        f"{e.processes} process{'es' if e.processes > 1 else ''}" for e in engines
    ]
    rows = [
        ["jobs/s (all rounds)"] + [f"{e.jobs / e.seconds:.1f}" for e in engines],
        ["jobs/s, rounds min–max"] + [f"{min(e.rates):.1f}–{max(e.rates):.1f}" for e in engines],
        ["speed-up over 1 process"]
        + [f"{(e.jobs / e.seconds) / (engines[0].jobs / engines[0].seconds):.2f}" for e in engines],
    ]
    for name, pick in [("first event", first_event), ("first delta", first_delta)]:
        for stat in ("p50", "p90"):
            cells = []
            for e in engines:
                values = [v for v in map(pick, e.first) if v is not None]
                cells.append(fmt_ms(summary(values).get(stat)))
            rows.append([f"{name} ms {stat}"] + cells)
    rows.append(
        ["jobs seen live from pending"]
        + [
            f"{sum(r['snapshot_status'] == 'pending' for r in e.first)}/{len(e.first)}"
            for e in engines
        ]
    )
    print_table(header, rows)
    print()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,2,4", help="worker process counts to compare")
    parser.add_argument("--jobs", type=int, default=40, help="jobs queued per round and site")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--first", type=int, default=20, help="single jobs per site for latency")
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= 500 or not 1 <= args.rounds <= 20 or not 1 <= args.first <= 200:
        parser.error("--jobs 1..500, --rounds 1..20, --first 1..200 (the bench stays bounded)")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
