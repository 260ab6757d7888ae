"""The embedded mode's Celery worker: threads inside the web process, on the memory transport."""

import logging
import threading

from celery.contrib.testing.worker import TestWorkController
from django.conf import settings

log = logging.getLogger(__name__)
_worker = None
_queues: set[str] = set()
_lock = threading.Lock()


def _startup_queues() -> list[str]:
    from . import registry

    try:
        return registry.all_queues()
    except Exception:  # no tables yet (migrate not run): the defaults
        return list(registry.QUEUES)


def start() -> None:
    """Start the in-process worker once; returns when it consumes from the queue."""
    global _worker
    with _lock:
        if _worker is not None:
            return
        from playground.celery import app

        queues = _startup_queues()
        worker = TestWorkController(
            app=app,
            concurrency=settings.PLAYGROUND_EMBEDDED_CONCURRENCY,
            hostname="embedded@playground",
            pool="threads",
            loglevel="WARNING",
            logfile=None,
            ready_callback=None,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            queues=queues,
        )
        threading.Thread(target=worker.start, daemon=True, name="embedded-worker").start()
        worker.ensure_started()
        _worker = worker
        _queues.update(queues)
        from . import reaper

        reaper.start()
        log.info("embedded engine worker started (%s threads)", worker.concurrency)


def ensure_queue(name: str) -> None:
    """The embedded worker takes every queue: one an operator named since it started too."""
    with _lock:
        if _worker is None or name in _queues:
            return
        consumer = getattr(_worker, "consumer", None)
        if consumer is None:
            return
        # Run on the consumer's own thread: its loop is not thread-safe.
        consumer.call_soon(consumer.add_task_queue, name)
        _queues.add(name)


def stop() -> None:
    global _worker
    with _lock:
        if _worker is not None:
            _worker.stop()
            _worker = None
            _queues.clear()
