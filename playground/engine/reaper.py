"""The reaper: jobs whose worker died are failed (holds released), lost queue messages re-sent.

Every engine worker process (and the embedded engine) runs it every PLAYGROUND_REAPER_INTERVAL
seconds (see `start`); its transitions are the same conditional UPDATEs as the engine's, so
several reapers at once are harmless.

A worker's main process fails the job of a child it lost at once (engine/tasks.py); the reaper
is for the rest: a whole worker (or its machine) gone. A running job is declared lost once it
has run past its model's hard time limit plus PLAYGROUND_REAPER_GRACE: Celery would have killed
it by then, so nobody is still running it.
"""

import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections
from django.db.models import Q
from django.utils import timezone

from ..models import Job
from . import registry, runner

log = logging.getLogger(__name__)
LOST_MESSAGE = "The worker running this job stopped. Nothing was charged."


def lost_after(job) -> timedelta:
    """How long after it started a running job counts as lost."""
    _, hard = registry.time_limits(job.model)
    return timedelta(seconds=hard + settings.PLAYGROUND_REAPER_GRACE)


def reap(now=None) -> dict:
    """One pass; returns counts of what it did."""
    now = now or timezone.now()
    grace = timedelta(seconds=settings.PLAYGROUND_REAPER_GRACE)
    failed = 0
    # Few jobs run at once (one per worker slot); each has its own model's limit.
    running = Job.objects.filter(status=Job.RUNNING, started_at__lt=now - grace)
    for job in running.select_related("model"):
        if job.started_at + lost_after(job) >= now:
            continue
        reason = "reaper: worker lost, hold released"
        if runner.abandon(job.pk, "worker_lost", LOST_MESSAGE, reason):
            failed += 1
    # A pending job whose message was sent this long ago has lost it (or every worker of its
    # queue is down): send it again. A second message for a job is harmless: only one
    # pending → running claim can succeed.
    cutoff = now - timedelta(seconds=settings.PLAYGROUND_REQUEUE_AFTER)
    stale = Q(queued_at__lt=cutoff) | Q(queued_at__isnull=True, created__lt=cutoff)
    requeued = 0
    for job in Job.objects.filter(stale, status=Job.PENDING).select_related("model"):
        try:
            registry.enqueue(job)
        except Exception:
            log.exception("could not re-queue job %s", job.request_id)
            continue
        Job.objects.filter(pk=job.pk).update(queued_at=now)
        requeued += 1
    if failed or requeued:
        log.warning("reaper: %s job(s) failed as worker lost, %s re-queued", failed, requeued)
    return {"failed": failed, "requeued": requeued}


_started = False
_lock = threading.Lock()


def start() -> None:
    """Run `reap` every PLAYGROUND_REAPER_INTERVAL seconds in a daemon thread (once a process)."""
    global _started
    with _lock:
        if _started:
            return
        _started = True

    def loop():
        stop = threading.Event()
        while not stop.wait(settings.PLAYGROUND_REAPER_INTERVAL):
            try:
                close_old_connections()
                reap()
            except Exception:
                log.exception("reaper pass failed")

    threading.Thread(target=loop, daemon=True, name="reaper").start()
