import logging

from billiard.exceptions import WorkerLostError
from celery import shared_task
from celery.exceptions import TimeLimitExceeded
from celery.signals import task_failure, worker_ready

from . import runner

log = logging.getLogger(__name__)


# Time limits come with each message (registry.enqueue: the model's own). The message is
# acknowledged when the task ends however it ends, so a job is never run twice: a lost
# worker's job is failed here or by the reaper, never delivered again.
@shared_task(name="playground.run_job", acks_late=True)
def run_job(job_id: int) -> None:
    runner.run_job(job_id)


@task_failure.connect(sender=run_job)
def _worker_process_gone(sender=None, exception=None, args=None, **kwargs):
    """In the worker's main process: its child running a job was killed, by Celery's hard time
    limit or by something else (the OOM killer). Fail the job now rather than at the reaper's
    next pass."""
    if not args or not isinstance(exception, (TimeLimitExceeded, WorkerLostError)):
        return
    from django.db import close_old_connections

    from .reaper import LOST_MESSAGE

    close_old_connections()
    try:
        if isinstance(exception, TimeLimitExceeded):
            seconds = exception.args[0] if exception.args else 0
            code, message = runner.time_limit_error(float(seconds or 0), hard=True)
            runner.abandon(args[0], code, message, "engine: hard time limit, hold released")
        else:
            reason = "engine: worker lost, hold released"
            runner.abandon(args[0], "worker_lost", LOST_MESSAGE, reason)
    except Exception:
        log.exception("could not fail job %s after its worker process died", args[0])


@shared_task(name="playground.deliver_webhook", ignore_result=True, time_limit=120)
def deliver_webhook(job_id: int, event: str, message_id: str, attempt: int = 1, body=None):
    from .. import webhooks

    webhooks.deliver(job_id, event, message_id, attempt, body)


@worker_ready.connect
def _start_reaper(**kwargs):
    from . import reaper

    reaper.start()
