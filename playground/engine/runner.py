"""Runs one job on its backend: state transitions, events, billing. Called by the Celery task."""

import logging
import time
from decimal import Decimal

from celery.exceptions import SoftTimeLimitExceeded
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from billing import ledger

from .. import pricing, sql, webhooks
from ..models import Job
from . import events, registry
from .base import BackendError, Canceled

log = logging.getLogger(__name__)
CANCEL_CHECK_SECONDS = 0.02


class JobEmitter:
    """Turns a backend's reports into events; keeps the live state for late subscribers."""

    def __init__(self, job: Job, soft_time_limit: float | None = None):
        self.job = job
        # Past this (monotonic) moment canceled() turns true: the model's soft time limit.
        self.deadline = time.monotonic() + soft_time_limit if soft_time_limit else None
        self.timed_out = False
        self.seq = 0
        self.pieces: list[str] = []
        self.progress_value = 0.0
        self.is_text = job.modality == "text"
        # Not canceled a moment ago, or the job could not have started running (the cancel
        # moves it out of pending first): the first look at the flag can wait its turn.
        self._next_cancel_check = time.monotonic() + CANCEL_CHECK_SECONDS
        self._canceled = False
        self.hooks = webhooks.JobHooks(job) if job.webhook_url else None

    def _send(self, payload: dict) -> None:
        self.seq += 1
        state = {"seq": self.seq, "progress": self.progress_value}
        if self.is_text:
            state["text"] = "".join(self.pieces)
            state["tokens"] = len(self.pieces)
        events.publish(self.job.request_id, payload, self.seq, state=state)

    def status(self, status: str) -> None:
        self._send({"type": "status", "status": status, "progress": self.progress_value})
        if self.hooks and status == Job.RUNNING:
            self.hooks.fire("start")

    def progress(self, value: float) -> None:
        self.progress_value = max(0.0, min(1.0, float(value)))
        self._send({"type": "progress", "progress": self.progress_value})
        if self.hooks:
            self.hooks.fire("output")

    def delta(self, text: str) -> None:
        self.pieces.append(text)
        self._send({"type": "delta", "text": text})
        if self.hooks:
            self.hooks.fire("output")

    def log(self, message: str) -> None:
        self._send({"type": "log", "message": str(message)})
        if self.hooks:
            self.hooks.log(str(message))

    def metrics(self, **numbers: float) -> None:
        self._send({"type": "metrics", **numbers})

    def store(self, data: bytes, filename: str, content_type: str) -> str:
        from ..media import save_output

        return save_output(self.job, data, filename, content_type).ref

    def canceled(self) -> bool:
        """True once the job was canceled or ran out of time: the backend should stop."""
        now = time.monotonic()
        if not self._canceled and self.deadline is not None and now >= self.deadline:
            self.timed_out = self._canceled = True
        if not self._canceled and now >= self._next_cancel_check:
            self._next_cancel_check = now + CANCEL_CHECK_SECONDS
            self._canceled = events.cancel_requested(self.job.request_id)
        return self._canceled


def run_job(job_id: int, job: Job | None = None) -> None:
    """Claim a pending job and run it. `job`: the caller's own copy of it (a job it has just
    submitted, to run in this process), used instead of reading the row back."""
    started = timezone.now()
    # Only one worker ever runs a job: the pending → running transition is the claim.
    claim = {"status": Job.RUNNING, "started_at": started}
    if not sql.update(Job, job_id, claim, where={"status": Job.PENDING}):
        return
    if job is None:
        job = Job.objects.select_related("model", "user").get(pk=job_id)
    else:
        job.status, job.started_at = Job.RUNNING, started
    execute(job)


def execute(job: Job) -> None:
    """Run a job that is already running in the database: claimed by `run_job`, or created
    so (`jobs.submit_job(start=True)`, upstream jobs run in the web process). `job` is left
    as its row now reads."""
    soft, _ = registry.time_limits(job.model)
    emit = JobEmitter(job, soft_time_limit=soft)
    emit.status(Job.RUNNING)
    events.publish_user_job(job)
    release_connection()
    t0 = time.perf_counter()
    try:
        if job.model is None or not job.model.enabled:
            raise BackendError("model_not_found", "The model was removed before the job ran.")
        result = registry.backend_for(job.model).run(job.params, emit)
    except (Canceled, SoftTimeLimitExceeded) as exc:
        if emit.timed_out or isinstance(exc, SoftTimeLimitExceeded):
            finish(job, Job.FAILED, error=time_limit_error(soft))
        # Otherwise cancel_job already moved the job to canceled and released its hold.
        discard_outputs(job)
        return
    except BackendError as exc:
        partial = getattr(exc, "usage", None)
        cost = pricing.charge(job.model, partial) if partial and job.model else Decimal(0)
        output = {"text": getattr(exc, "text", "")} if partial else {}
        finish(
            job,
            Job.FAILED,
            cost=cost,
            output=output,
            usage=partial or {},
            error=(exc.code, exc.message),
        )
    except Exception:
        log.exception("job %s failed", job.request_id)
        finish(
            job,
            Job.FAILED,
            error=("internal_error", "The model failed while generating. Nothing was charged."),
        )
    else:
        usage = dict(result.usage)
        finish(
            job,
            Job.SUCCESS,
            cost=pricing.charge(job.model, usage),
            output=result.output,
            usage=usage,
        )
    log.info("job %s done in %.1f ms", job.request_id, (time.perf_counter() - t0) * 1000)


def release_connection() -> None:
    """Before a backend runs (an upstream model may answer for minutes): a pooled PostgreSQL
    connection goes back to the pool, so a web process running upstream jobs inline is not
    limited to PLAYGROUND_DB_POOL_SIZE of them at once. Django's rule decides: connections it
    keeps (SQLite, CONN_MAX_AGE) stay open. Never inside a transaction."""
    if not connection.in_atomic_block:
        close_old_connections()


def time_limit_error(seconds, hard: bool = False) -> tuple[str, str]:
    what = "hard time limit" if hard else "time limit"
    return (
        "time_limit",
        f"The job ran past the model's {what} of {seconds:g} s and was stopped. "
        "Nothing was charged.",
    )


def abandon(job_id: int, code: str, message: str, reason: str) -> bool:
    """Fail a running job whose worker is gone (killed, or past its hard limit): nothing
    charged, hold released with `reason` on the ledger row. False if it was not running."""
    from ..jobs import status_document

    with transaction.atomic():
        if not Job.objects.filter(pk=job_id, status=Job.RUNNING).update(
            status=Job.FAILED,
            cost=0,
            finished_at=timezone.now(),
            error_code=code,
            error_message=message,
        ):
            return False
        job = Job.objects.select_related("user").get(pk=job_id)
        ledger.settle(job, None, reason=reason)
    discard_outputs(job)
    job.refresh_from_db()
    events.publish_result(job.request_id, status_document(job))
    webhooks.job_completed(job)
    events.publish_user_job(job)
    return True


def finish(job, status, *, cost=Decimal(0), output=None, usage=None, error=("", "")) -> None:
    """Move a running job to its terminal state and settle its hold, exactly once."""
    from ..jobs import status_document

    cost = min(cost, job.hold_amount) if job.hold_open else Decimal(0)
    fields = {
        "status": status,
        "progress": 1.0 if status == Job.SUCCESS else job.progress,
        "output": output or {},
        "usage": usage or {},
        "cost": cost,
        "error_code": error[0],
        "error_message": error[1],
        "finished_at": timezone.now(),
    }
    with transaction.atomic():
        changed = sql.update(Job, job.pk, fields, where={"status": Job.RUNNING})
        if changed:
            ledger.settle(job, cost)
    if not changed or status != Job.SUCCESS:
        discard_outputs(job)  # files of a job that did not succeed (or was canceled meanwhile)
    if changed:
        # The row now holds these values (no read back: this is every job's hot path).
        for name, value in fields.items():
            setattr(job, name, value)
        job.hold_open = False
        events.publish_result(job.request_id, status_document(job))
        webhooks.job_completed(job)
        events.publish_user_job(job)


def discard_outputs(job) -> None:
    """Deletes the files a job stored (rows now, bytes once that commits)."""
    from ..models import MediaFile

    MediaFile.objects.filter(job=job).delete()
