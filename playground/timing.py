"""Server-Timing for /v1: where a request's time went (auth, limits, db, queue, app).

One dict per request in a context variable; asgiref copies the context into the threads of
`sync_to_async`, so spans measured there land in the same dict. Database time comes from an
execute wrapper installed on every connection.
"""

import time
from contextlib import contextmanager
from contextvars import ContextVar

from django.db.backends.signals import connection_created
from django.dispatch import receiver

_current: ContextVar[dict | None] = ContextVar("server_timing", default=None)
ORDER = ("auth", "limits", "db", "queue", "wait")


def start(request_id: str) -> dict:
    record = {"request_id": request_id, "start": time.perf_counter(), "db_count": 0}
    _current.set(record)
    return record


def current() -> dict | None:
    return _current.get()


def add(name: str, seconds: float) -> None:
    record = _current.get()
    if record is not None:
        record[name] = record.get(name, 0.0) + seconds


@contextmanager
def span(name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        add(name, time.perf_counter() - t0)


def header(record: dict) -> str:
    """`auth;dur=0.81, db;dur=2.30;desc="4 queries", …, app;dur=5.10` (milliseconds)."""
    parts = []
    for name in ORDER:
        if name in record:
            entry = f"{name};dur={record[name] * 1000:.2f}"
            if name == "db":
                entry += f';desc="{record["db_count"]} queries"'
            parts.append(entry)
    parts.append(f"app;dur={(time.perf_counter() - record['start']) * 1000:.2f}")
    return ", ".join(parts)


def _db_timer(execute, sql, params, many, context):
    record = _current.get()
    if record is None:
        return execute(sql, params, many, context)
    t0 = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        record["db"] = record.get("db", 0.0) + time.perf_counter() - t0
        record["db_count"] += 1


@receiver(connection_created)
def _install(sender, connection, **kwargs):
    # First in the list: `connection.execute_wrapper()` blocks pop the last one on exit.
    if _db_timer not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, _db_timer)
