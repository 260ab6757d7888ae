"""The proof (CONTRACT §8): many threads submit and finish jobs on one account, on PostgreSQL.

Each thread uses the real submit path (`jobs.submit_job`: worst-case hold) and the engine's own
transitions (the pending → running claim, `runner.finish` for success or failure,
`jobs.cancel_job` for cancels, some with a cut stream's delivered usage, some racing a finish).
A sampler checks sum(ledger) == available in single-statement snapshots while they run.
"""

import random
import threading
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.db.models import Sum

from billing import ledger
from billing.models import CreditAccount, LedgerEntry, UsageDay
from playground import jobs, pricing
from playground.catalogue import get_model
from playground.engine import registry, runner
from playground.errors import ApiError
from playground.models import Job
from tests.conftest import require_postgres

THREADS = 12
JOBS_PER_THREAD = 15
START = Decimal("0.2")


def claim(job) -> bool:
    return bool(Job.objects.filter(pk=job.pk, status=Job.PENDING).update(status=Job.RUNNING))


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_ledger_stays_exact_under_concurrent_jobs(alice, monkeypatch):
    require_postgres()
    monkeypatch.setattr(registry, "enqueue", lambda job: None)
    model = get_model("trigram-pydoc")
    model.per_request = Decimal("0.000123")
    model.per_1k_input = Decimal("0.0371")
    model.per_1k_output = Decimal("0.1093")
    model.save()
    ledger.grant(alice, START, reason="test")
    account_id = ledger.account_for(alice).pk
    refused, errors, drift = [], [], []
    done = threading.Event()

    def sampler():
        try:
            with connection.cursor() as cur:
                while not done.is_set():
                    # One statement, one snapshot: the account row and its ledger agree.
                    cur.execute(
                        "SELECT a.available, a.held, (SELECT coalesce(sum(amount), 0) "
                        "FROM billing_ledgerentry WHERE account_id = a.id) "
                        "FROM billing_creditaccount a WHERE a.id = %s",
                        [account_id],
                    )
                    available, held, total = cur.fetchone()
                    if available != total or available < 0 or held < 0:
                        drift.append((available, held, total))
        finally:
            connections.close_all()

    def cancel_in_thread(job):
        try:
            jobs.cancel_job(job)
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def worker(n):
        rng = random.Random(n)
        try:
            for _ in range(JOBS_PER_THREAD):
                params = jobs.validate_params(
                    model,
                    {"prompt": "The class " * rng.randint(1, 5), "max_tokens": rng.randint(1, 80)},
                )
                try:
                    job = jobs.submit_job(alice, model, params)
                except ApiError as exc:
                    assert exc.status == 402 and exc.code == "insufficient_credits"
                    refused.append(1)
                    continue
                fate = rng.random()
                if fate < 0.15:
                    jobs.cancel_job(job)  # canceled while pending
                    continue
                assert claim(job)
                tokens = rng.randint(0, params["max_tokens"])
                usage = {"prompt_tokens": registry.prompt_tokens_bound(model, params)}
                usage["completion_tokens"] = tokens
                usage["total_tokens"] = usage["prompt_tokens"] + tokens
                if fate < 0.30:
                    jobs.cancel_job(job, delivered=usage)  # a cut stream: charged what was sent
                elif fate < 0.45:
                    runner.finish(job, Job.FAILED, error=("internal_error", "injected"))
                elif fate < 0.55:
                    # Cancel and finish race: exactly one wins, the hold settles once.
                    racer = threading.Thread(target=cancel_in_thread, args=(job,))
                    racer.start()
                    runner.finish(job, Job.SUCCESS, cost=pricing.charge(model, usage), usage=usage)
                    racer.join()
                else:
                    runner.finish(job, Job.SUCCESS, cost=pricing.charge(model, usage), usage=usage)
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    watch = threading.Thread(target=sampler)
    watch.start()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    done.set()
    watch.join(10)
    assert not errors, errors
    assert not drift, drift[:3]

    account = CreditAccount.objects.get(user=alice)
    total = LedgerEntry.objects.filter(account=account).aggregate(s=Sum("amount"))["s"]
    assert total == account.available >= 0
    assert account.held == 0 and account.balance == account.available + account.held
    assert not Job.objects.filter(hold_open=True).exists()
    assert refused, "the account should have run out of credits at some point"
    finished = Job.objects.filter(user=alice)
    assert finished.count() + len(refused) == THREADS * JOBS_PER_THREAD
    statuses = set(finished.values_list("status", flat=True))
    assert statuses == {"success", "failed", "canceled"}
    for job in finished:
        captured = -(
            job.ledger.filter(kind="capture").aggregate(s=Sum("amount"))["s"] or Decimal(0)
        )
        assert captured == job.cost
        assert job.ledger.filter(kind="hold").count() == 1
        assert job.ledger.filter(kind="release").count() == 1
        if job.status == "success" or (job.status == "canceled" and job.usage):
            assert job.cost == pricing.charge(model, job.usage) <= job.hold_amount
        else:
            assert job.cost == 0
    spent = finished.aggregate(s=Sum("cost"))["s"]
    assert account.balance == START - spent
    # The usage charts' rollup equals the capture rows.
    rollup = UsageDay.objects.filter(account=account).aggregate(c=Sum("credits"), j=Sum("jobs"))
    captures = LedgerEntry.objects.filter(account=account, kind="capture")
    assert rollup["c"] == spent and rollup["j"] == captures.count()
