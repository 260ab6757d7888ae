from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from . import runner


@shared_task(
    name="playground.run_job",
    acks_late=True,
    soft_time_limit=settings.PLAYGROUND_JOB_TIME_LIMIT,
    time_limit=settings.PLAYGROUND_JOB_TIME_LIMIT + 30,
)
def run_job(job_id: int) -> None:
    runner.run_job(job_id)


@shared_task(name="playground.deliver_webhook", ignore_result=True, time_limit=120)
def deliver_webhook(job_id: int, event: str, message_id: str, attempt: int = 1, body=None):
    from .. import webhooks

    webhooks.deliver(job_id, event, message_id, attempt, body)


@worker_ready.connect
def _start_reaper(**kwargs):
    from . import reaper

    reaper.start()
