"""Engine routing and time limits, in process: which queue a job goes to, soft and hard limits,
a lost worker process, and the reaper's per-model deadlines. (The same against real worker
processes: tests/test_engine_services.py.)"""

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from billiard.exceptions import WorkerLostError
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from billing import ledger
from playground.engine import reaper, registry, tasks
from playground.engine.base import Result
from playground.models import AIModel, Job

pytestmark = pytest.mark.django_db(transaction=True)


def slow_model(slug="slow-trigram", **fields) -> AIModel:
    """The built-in trigram model, made slow (token_delay), with its own limits and queue."""
    fields.setdefault("config", {"token_delay": 0.005})
    return AIModel.objects.create(
        slug=slug,
        name=slug,
        modality="text",
        backend="trigram",
        per_1k_input=Decimal("0.01"),
        per_1k_output=Decimal("0.02"),
        **fields,
    )


def add_openai(*extra):
    call_command("models", "add-openai", "up", "--base-url", "http://127.0.0.1:9/v1", *extra)
    return AIModel.objects.get(slug="up")


@pytest.fixture
def sent(monkeypatch):
    """What registry.enqueue hands to Celery: (args, options) per message."""
    calls = []
    monkeypatch.setattr(
        tasks.run_job, "apply_async", lambda args, **options: calls.append((args, options))
    )
    return calls


# Routing -----------------------------------------------------------------------------------


def test_each_modality_and_remote_backend_has_its_queue(db):
    assert registry.queue_for(AIModel.objects.get(slug="trigram-pydoc")) == "text"
    assert registry.queue_for(AIModel.objects.get(slug="hash-embed")) == "embedding"
    assert registry.queue_for(add_openai()) == "upstream"
    call_command("models", "add-remote", "far", "--base-url", "http://127.0.0.1:9/v1")
    assert registry.queue_for(AIModel.objects.get(slug="far")) == "upstream"
    assert registry.queue_for(AIModel(modality="image", backend="diffusion")) == "image"


def test_operator_queue_wins_and_workers_taking_all_take_it(db):
    model = add_openai("--queue", "gpu-a")
    assert registry.queue_for(model) == "gpu-a"
    assert registry.all_queues() == [*registry.QUEUES, "engine", "gpu-a"]
    # Updating without --queue keeps it; an empty one goes back to the default.
    assert registry.queue_for(add_openai()) == "gpu-a"
    assert registry.queue_for(add_openai("--queue", "")) == "upstream"


def test_submit_sends_the_job_to_its_queue_with_its_limits(api, alice_key, sent):
    slow_model(queue="gpu-b", soft_time_limit=30, time_limit=45)
    for model, queue, limits in [
        ("trigram-pydoc", "text", (600 + registry.SOFT_LIMIT_GRACE, 630)),
        ("slow-trigram", "gpu-b", (30 + registry.SOFT_LIMIT_GRACE, 45)),
    ]:
        body = {"model": model, "prompt": "x", "max_tokens": 5}
        assert api.post("/v1/generate-text", body, key=alice_key).status_code == 200
        args, options = sent[-1]
        job = Job.objects.get(pk=args[0])
        assert job.model_slug == model and options["queue"] == queue
        assert (options["soft_time_limit"], options["time_limit"]) == limits


@pytest.mark.parametrize(
    "extra",
    [
        ["--queue", "no spaces"],
        ["--queue", "-x"],
        ["--soft-time-limit", "0"],
        ["--soft-time-limit", "60", "--time-limit", "60"],
        ["--time-limit", "5"],  # below the default soft limit (600)
    ],
)
def test_bad_queue_or_limits_are_refused_and_change_nothing(db, extra):
    with pytest.raises(CommandError):
        add_openai(*extra)
    assert not AIModel.objects.filter(slug="up").exists()


def test_admin_validation_refuses_a_hard_limit_under_the_soft_one(db):
    model = AIModel.objects.get(slug="trigram-pydoc")
    model.soft_time_limit, model.time_limit = 20, 10
    with pytest.raises(ValidationError) as info:
        model.full_clean()
    assert "time_limit" in info.value.message_dict
    model.queue = "bad queue"
    with pytest.raises(ValidationError) as info:
        model.full_clean()
    assert "queue" in info.value.message_dict
    model.soft_time_limit, model.time_limit, model.queue = 20, 30, "gpu.1"
    model.full_clean()


def test_worker_command_refuses_bad_queue_names(db):
    with pytest.raises(CommandError):
        call_command("worker", "--queues", "text,no good")
    with pytest.raises(CommandError):
        call_command("worker", "--queues", ",")


# Time limits -------------------------------------------------------------------------------


def run(api, key, model, **body):
    body = {"model": model, "prompt": "The class", "wait_for_result": True, **body}
    return api.post("/v1/generate-text", body, key=key).json()


def test_soft_limit_stops_the_backend_and_fails_with_time_limit(api, alice_key, alice_with_credits):
    slow_model(soft_time_limit=1)
    started = time.monotonic()
    doc = run(api, alice_key, "slow-trigram", max_tokens=1000)  # 5 s of tokens
    took = time.monotonic() - started
    assert doc["status"] == "failed" and doc["error"]["code"] == "time_limit", doc
    assert "1 s" in doc["error"]["message"]
    assert 1 <= took < 2.5
    assert doc["cost"] == "0"
    assert ledger.balances(alice_with_credits) == (Decimal("10"), Decimal("10"))
    job = Job.objects.get(request_id=doc["request_id"])
    assert not job.hold_open and job.ledger.filter(kind="capture").count() == 0


def test_a_job_within_its_limit_succeeds(api, alice_key):
    slow_model(soft_time_limit=5)
    doc = run(api, alice_key, "slow-trigram", max_tokens=20)
    assert doc["status"] == "success" and Decimal(doc["cost"]) > 0


def test_celery_soft_limit_stops_a_backend_that_never_checks(
    api, alice_key, alice_with_credits, monkeypatch
):
    class Blocking:
        def run(self, params, emit):
            raise SoftTimeLimitExceeded()  # what Celery raises inside a blocked backend

    monkeypatch.setattr(registry, "backend_for", lambda model: Blocking())
    doc = run(api, alice_key, "trigram-pydoc", max_tokens=5)
    assert doc["status"] == "failed" and doc["error"]["code"] == "time_limit"
    assert ledger.balances(alice_with_credits) == (Decimal("10"), Decimal("10"))


def running_job(api, key, monkeypatch, model="trigram-pydoc") -> Job:
    monkeypatch.setattr(registry, "enqueue", lambda job: None)
    body = {"model": model, "prompt": "x", "max_tokens": 50}
    rid = api.post("/v1/generate-text", body, key=key).json()["request_id"]
    Job.objects.filter(request_id=rid).update(status=Job.RUNNING, started_at=timezone.now())
    return Job.objects.get(request_id=rid)


@pytest.mark.parametrize(
    "exception,code,reason",
    [
        (TimeLimitExceeded(630), "time_limit", "hard time limit"),
        (WorkerLostError("signal 9"), "worker_lost", "worker lost"),
    ],
)
def test_killed_worker_process_fails_its_job_at_once(
    api, alice_key, alice_with_credits, monkeypatch, exception, code, reason
):
    job = running_job(api, alice_key, monkeypatch)
    assert ledger.balances(alice_with_credits)[1] < Decimal("10")
    # Celery's main process reports its child's death with this signal.
    tasks.task_failure.send(sender=tasks.run_job, exception=exception, args=[job.pk])
    job.refresh_from_db()
    assert job.status == "failed" and job.error_code == code and job.cost == 0
    assert ledger.balances(alice_with_credits) == (Decimal("10"), Decimal("10"))
    assert reason in job.ledger.get(kind="release").reason
    # An ordinary failure in the task is not a lost process: nothing more happens.
    tasks.task_failure.send(sender=tasks.run_job, exception=ValueError(), args=[job.pk])
    assert job.ledger.count() == 2  # hold and release


# The reaper --------------------------------------------------------------------------------


def test_reaper_uses_each_models_hard_limit(api, alice_key, monkeypatch, settings):
    settings.PLAYGROUND_REAPER_GRACE = 1
    slow_model(soft_time_limit=3, time_limit=5)
    quick = running_job(api, alice_key, monkeypatch, model="slow-trigram")
    default = running_job(api, alice_key, monkeypatch)
    ten_ago = timezone.now() - timedelta(seconds=10)
    Job.objects.filter(pk__in=[quick.pk, default.pk]).update(started_at=ten_ago)
    assert reaper.reap() == {"failed": 1, "requeued": 0}
    quick.refresh_from_db()
    default.refresh_from_db()
    assert quick.status == "failed" and quick.error_code == "worker_lost"
    assert default.status == "running"  # 10 s is well within 630 s
    now = timezone.now()
    assert reaper.reap(now + timedelta(seconds=631))["failed"] == 1


def test_reaper_resends_a_lost_message_once_per_period(api, alice_key, monkeypatch, settings):
    settings.PLAYGROUND_REQUEUE_AFTER = 60
    sent = []
    monkeypatch.setattr(registry, "enqueue", sent.append)
    body = {"model": "trigram-pydoc", "prompt": "x", "max_tokens": 5}
    rid = api.post("/v1/generate-text", body, key=alice_key).json()["request_id"]
    sent.clear()
    now = timezone.now()
    assert reaper.reap(now)["requeued"] == 0  # its message is fresh
    assert reaper.reap(now + timedelta(seconds=61))["requeued"] == 1
    assert reaper.reap(now + timedelta(seconds=62))["requeued"] == 0  # just sent again
    assert reaper.reap(now + timedelta(seconds=180))["requeued"] == 1
    assert [str(j.request_id) for j in sent] == [rid, rid]


def test_soft_limit_and_cancel_are_told_apart(api, alice_key, alice_with_credits, monkeypatch):
    """A cancel during a slow job ends canceled, not time_limit."""
    from playground import jobs

    slow_model(soft_time_limit=30)

    class CancelMidway:
        def run(self, params, emit):
            jobs.cancel_job(Job.objects.get(status=Job.RUNNING))
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                if emit.canceled():
                    from playground.engine.base import Canceled

                    raise Canceled()
                time.sleep(0.01)
            return Result(output={"text": "never"})

    monkeypatch.setattr(registry, "backend_for", lambda model: CancelMidway())
    doc = run(api, alice_key, "slow-trigram", max_tokens=5)
    assert doc["status"] == "canceled" and doc["cost"] == "0"
    assert ledger.balances(alice_with_credits) == (Decimal("10"), Decimal("10"))


def test_models_add_remote_stores_the_remote_and_refuses_bad_input(db):
    url = "http://remote.example:8000/v1/"
    call_command(
        "models",
        "add-remote",
        "far",
        "--base-url",
        url,
        "--upstream-model",
        "trigram-pydoc",
        "--api-key-env",
        "FAR_KEY",
        "--per-1k-output",
        "0.5",
        "--max-tokens",
        "512",
        "--soft-time-limit",
        "30",
        "--time-limit",
        "40",
    )
    model = AIModel.objects.get(slug="far")
    assert (model.backend, model.modality, model.max_tokens_limit) == ("playground", "text", 512)
    assert model.config == {
        "base_url": "http://remote.example:8000/v1",
        "upstream_model": "trigram-pydoc",
        "api_key_env": "FAR_KEY",
    }
    assert (model.soft_time_limit, model.time_limit, model.per_1k_output) == (
        30,
        40,
        Decimal("0.5"),
    )
    for bad in (
        ["trigram-pydoc", "--base-url", url],  # a built-in id
        ["x", "--base-url", "ftp://remote/v1"],
        ["x", "--base-url", url, "--api-key-env", "NOT A NAME"],
        ["x", "--base-url", url, "--max-tokens", "0"],
        ["x", "--base-url", url, "--per-second", "-1"],
    ):
        with pytest.raises(CommandError):
            call_command("models", "add-remote", *bad)
    assert not AIModel.objects.filter(slug="x").exists()
