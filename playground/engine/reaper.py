"""The reaper: jobs whose worker died are failed (holds released), lost queue messages re-sent.

Every engine worker process runs it once a minute (see `start`); its transitions are the same
conditional UPDATEs as the engine's, so several reapers at once are harmless.
"""

import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from billing import ledger

from .. import webhooks
from ..models import Job
from . import events, registry

log = logging.getLogger(__name__)
INTERVAL_SECONDS = 60
# A pending job this old has lost its queue message (or every worker is down): send it again.
# A second message for a job is harmless: only one pending → running claim can succeed.
REQUEUE_AFTER = timedelta(minutes=10)
LOST_MESSAGE = "The worker running this job stopped. Nothing was charged."


def running_deadline(now):
    """Jobs running since before this outlived the hard time limit: their worker is gone."""
    return now - timedelta(seconds=settings.PLAYGROUND_JOB_TIME_LIMIT + 60)


def reap(now=None) -> dict:
    """One pass; returns counts of what it did."""
    from ..jobs import status_document

    now = now or timezone.now()
    failed = 0
    for job in Job.objects.filter(status=Job.RUNNING, started_at__lt=running_deadline(now)):
        with transaction.atomic():
            if not Job.objects.filter(pk=job.pk, status=Job.RUNNING).update(
                status=Job.FAILED,
                cost=0,
                finished_at=now,
                error_code="worker_lost",
                error_message=LOST_MESSAGE,
            ):
                continue
            ledger.settle(job, None, reason="reaper: worker lost, hold released")
        failed += 1
        job.refresh_from_db()
        events.publish_result(job.request_id, status_document(job))
        webhooks.job_completed(job)
    requeued = 0
    for job in Job.objects.filter(status=Job.PENDING, created__lt=now - REQUEUE_AFTER):
        try:
            registry.enqueue(job)
            requeued += 1
        except Exception:
            log.exception("could not re-queue job %s", job.request_id)
    if failed or requeued:
        log.warning("reaper: %s job(s) failed as worker lost, %s re-queued", failed, requeued)
    return {"failed": failed, "requeued": requeued}


_started = False
_lock = threading.Lock()


def start() -> None:
    """Run `reap` every INTERVAL_SECONDS in a daemon thread of this process (once)."""
    global _started
    with _lock:
        if _started:
            return
        _started = True

    def loop():
        stop = threading.Event()
        while not stop.wait(INTERVAL_SECONDS):
            try:
                close_old_connections()
                reap()
            except Exception:
                log.exception("reaper pass failed")

    threading.Thread(target=loop, daemon=True, name="reaper").start()
