"""SQLite for the embedded mode: this process's write transactions queue for each other.

SQLite lets one writer in at a time. A connection that finds the write lock taken polls,
sleeping 1, 2, 5 … 100 ms between tries, so under load some requests waited over a second
while the lock sat free (bench/README.md). Here a thread takes a lock of this process before
its BEGIN IMMEDIATE and releases it when the transaction ends, so the next writer starts the
moment the previous one commits. Other processes (manage.py commands) still meet SQLite's own
busy timeout; so does a thread that waited on the lock for that long.

Connections close at the end of each request (CONN_MAX_AGE=0), except on threads marked by
`keep_connections_open`: the /v1 handler's reused request threads (playground/middleware.py)
and the threads of streamed inline jobs (playground/openai_api.py). There a new connection
per request (open, pragmas, Django's functions, the schema read on first use) cost more CPU
than the rest of a chat completion's statements together.
"""

import threading

from django.db.backends.sqlite3 import base

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_thread = threading.local()


def keep_connections_open() -> None:
    """Connections this thread opens from now on stay open across requests (until the thread
    ends or the connection fails). For threads that serve one request after another."""
    _thread.keep = True


def _write_lock(name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(name, threading.Lock())


class DatabaseWrapper(base.DatabaseWrapper):
    _held = None  # the write lock, while this connection holds it

    def connect(self):
        super().connect()
        if getattr(_thread, "keep", False):
            self.close_at = None  # as CONN_MAX_AGE=None: close_old_connections keeps it

    def _start_transaction_under_autocommit(self):
        lock = _write_lock(str(self.settings_dict["NAME"]))
        timeout = self.settings_dict["OPTIONS"].get("timeout", 5)
        self._held = lock if lock.acquire(timeout=timeout) else None
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release()
            raise

    def _release(self):
        held, self._held = self._held, None
        if held is not None:
            held.release()

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._release()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._release()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._release()
