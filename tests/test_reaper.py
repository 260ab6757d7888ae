"""The reaper: a dead worker's job fails with its hold released; a lost message is re-sent."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import ledger
from playground.engine import reaper, registry
from playground.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queued(monkeypatch):
    sent = []
    monkeypatch.setattr(registry, "enqueue", sent.append)
    return sent


def submit(api, key):
    body = {"model": "trigram-pydoc", "prompt": "x", "max_tokens": 50}
    return Job.objects.get(
        request_id=api.post("/v1/generate-text", body, key=key).json()["request_id"]
    )


def test_job_of_a_dead_worker_fails_and_its_hold_is_released(
    api, alice_key, alice_with_credits, queued
):
    job = submit(api, alice_key)
    long_ago = timezone.now() - timedelta(hours=2)
    Job.objects.filter(pk=job.pk).update(status=Job.RUNNING, started_at=long_ago)
    assert ledger.balances(alice_with_credits)[1] < Decimal("10")  # held
    assert reaper.reap() == {"failed": 1, "requeued": 0}
    job.refresh_from_db()
    assert job.status == "failed" and job.error_code == "worker_lost" and job.cost == 0
    assert ledger.balances(alice_with_credits) == (Decimal("10"), Decimal("10"))
    release = job.ledger.get(kind="release")
    assert "reaper" in release.reason
    assert reaper.reap() == {"failed": 0, "requeued": 0}  # once only
    assert (
        api.get(f"/v1/requests/{job.request_id}", key=alice_key).json()["error"]["code"]
        == "worker_lost"
    )


def test_recent_running_job_is_left_alone(api, alice_key, queued):
    job = submit(api, alice_key)
    Job.objects.filter(pk=job.pk).update(status=Job.RUNNING, started_at=timezone.now())
    assert reaper.reap() == {"failed": 0, "requeued": 0}
    job.refresh_from_db()
    assert job.status == "running" and job.hold_open


def test_old_pending_job_is_requeued_and_runs_once(api, alice_key, queued):
    job = submit(api, alice_key)
    long_ago = timezone.now() - timedelta(minutes=11)
    Job.objects.filter(pk=job.pk).update(created=long_ago, queued_at=long_ago)
    queued.clear()
    assert reaper.reap()["requeued"] == 1
    assert [j.pk for j in queued] == [job.pk]
    from playground.engine.runner import run_job

    run_job(job.pk)
    run_job(job.pk)  # the original message arriving late: no second run
    job.refresh_from_db()
    assert job.status == "success"
    assert job.ledger.filter(kind="capture").count() == 1
