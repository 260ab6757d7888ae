"""The Celery app: the generation engine's queue."""

import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")

# The embedded mode's in-process transport: kombu's memory transport with a blocking get.
TRANSPORT_ALIASES["pgmemory"] = "playground.engine.memory_transport:Transport"

app = Celery("playground")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=False,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_default_queue="engine",  # registry.DEFAULT_QUEUE
)
app.autodiscover_tasks(["playground.engine"])
