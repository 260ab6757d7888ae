"""Shared bench helpers: live sites (tests/live.py), percentiles, table printing."""

import contextlib
import secrets
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.live import services_available, start_site  # noqa: E402

MODEL = "trigram-pydoc"
PROMPT = "The for statement is used to iterate over"
MODES = ("embedded", "services")
_redis_in_use: set[str] = set()


def modes_for(arg: str) -> list[str]:
    modes = list(MODES) if arg == "both" else [arg]
    if "services" in modes and not services_available():
        if arg == "both":
            print("! PostgreSQL/Redis not answering: services mode skipped", file=sys.stderr)
            modes.remove("services")
        else:
            raise SystemExit("PostgreSQL/Redis not answering on 127.0.0.1: no services mode")
    return modes


class Site:
    """One live site (daphne + engine) with a funded user and its API key."""

    def __init__(
        self,
        mode: str,
        credits: str = "100000",
        workers: int = 1,
        extra_env=None,
        worker_args: tuple[str, ...] = ("--concurrency", "2"),
    ):
        self.mode = mode
        # As deployed: DEBUG off (embedded mode defaults to on, which logs every query).
        extra_env = {"DEBUG": "0", **(extra_env or {})}
        self._tmp = tempfile.TemporaryDirectory(prefix=f"bench-{mode}-")
        for _ in range(5):
            self.live = start_site(
                Path(self._tmp.name),
                services=mode == "services",
                workers=workers,
                extra_env=extra_env,
                worker_args=worker_args,
            )
            # tests/live.py draws a random Redis db (1-15): two services sites of one bench run
            # on the same db would take each other's jobs, so draw again.
            redis_url = self.live.env.get("REDIS_URL")
            if redis_url is None or redis_url not in _redis_in_use:
                break
            self.live.stop()
        if redis_url is not None:
            _redis_in_use.add(redis_url)
        try:
            email = f"bench-{secrets.token_hex(4)}@example.com"
            self.key = self.live.user_with_key(email, credits)
        except Exception:
            self.close()
            raise
        self.base_url = self.live.base_url
        self.ws_url = self.live.ws_url
        self.headers = {"Authorization": f"Bearer {self.key}"}

    @property
    def data_dir(self) -> str:
        return self.live.env["PLAYGROUND_DATA_DIR"]

    def pids(self) -> dict[str, int]:
        """Process ids: daphne first, then the worker parents (services mode)."""
        names = ["daphne"] + [f"worker{i}" for i in range(len(self.live.processes) - 1)]
        return {n: p.pid for n, p in zip(names, self.live.processes, strict=True)}

    def job_times(self, request_ids: list[str]) -> dict[str, tuple[float, float, float]]:
        """request_id -> (created, started_at, finished_at) as epoch seconds, from the database."""
        sql = "SELECT request_id, created, started_at, finished_at FROM playground_job"
        out = {}
        if self.mode == "services":
            import psycopg

            with psycopg.connect(self.live.env["DATABASE_URL"]) as conn:
                rows = conn.execute(sql).fetchall()
            for rid, *stamps in rows:
                if None not in stamps:
                    out[str(rid)] = tuple(s.timestamp() for s in stamps)
        else:
            import sqlite3
            from datetime import UTC, datetime

            with contextlib.closing(
                sqlite3.connect(Path(self.data_dir, "playground.sqlite3"))
            ) as c:
                rows = c.execute(sql).fetchall()
            for rid, *stamps in rows:
                if None in stamps:
                    continue
                rid = str(rid)
                if "-" not in rid:  # SQLite stores UUIDs as 32 hex digits
                    rid = f"{rid[:8]}-{rid[8:12]}-{rid[12:16]}-{rid[16:20]}-{rid[20:]}"
                out[rid] = tuple(
                    datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp() for s in stamps
                )
        wanted = set(request_ids)
        return {k: v for k, v in out.items() if k in wanted}

    def close(self):
        live = getattr(self, "live", None)
        if live is not None:
            live.stop()
            _redis_in_use.discard(live.env.get("REDIS_URL"))
        self._tmp.cleanup()


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells) -> str:
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(header))
    print("-" * len(line(header)))
    for row in rows:
        print(line(row))
