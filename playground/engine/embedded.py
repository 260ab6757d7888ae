"""The embedded mode's Celery worker: threads inside the web process, on the memory transport."""

import logging
import threading

from celery.contrib.testing.worker import TestWorkController
from django.conf import settings

log = logging.getLogger(__name__)
_worker = None
_lock = threading.Lock()


def start() -> None:
    """Start the in-process worker once; returns when it consumes from the queue."""
    global _worker
    with _lock:
        if _worker is not None:
            return
        from playground.celery import app

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
            queues=["engine"],
        )
        threading.Thread(target=worker.start, daemon=True, name="embedded-worker").start()
        worker.ensure_started()
        _worker = worker
        from . import reaper

        reaper.start()
        log.info("embedded engine worker started (%s threads)", worker.concurrency)


def stop() -> None:
    global _worker
    with _lock:
        if _worker is not None:
            _worker.stop()
            _worker = None
