"""Credit rules (CONTRACT §8): exact sums, holds, settles, no negative balance under concurrency."""

import random
import threading
from decimal import Decimal

import pytest
from django.db import connections
from django.db.models import Sum

from billing import ledger
from billing.models import CreditAccount, LedgerEntry
from playground import jobs
from playground.catalogue import get_model
from playground.engine import registry, runner
from playground.errors import ApiError
from playground.models import Job
from tests.conftest import require_postgres


def ledger_sum(user) -> Decimal:
    return LedgerEntry.objects.filter(account__user=user).aggregate(s=Sum("amount"))[
        "s"
    ] or Decimal(0)


@pytest.mark.parametrize(
    "value,text",
    [
        (Decimal("0"), "0"),
        (Decimal("1.500000"), "1.5"),
        (Decimal("1E+3"), "1000"),
        (Decimal("0.000001"), "0.000001"),
        (Decimal("-0"), "0"),
        (12, "12"),
    ],
)
def test_money_format_has_no_exponent(value, text):
    assert ledger.fmt(value) == text


@pytest.mark.django_db
def test_hold_never_makes_available_negative(alice):
    ledger.grant(alice, Decimal("1"))
    job = Job.objects.create(user=alice, model_slug="m", modality="text", hold_amount=Decimal("1"))
    ledger.hold(alice, job, Decimal("1"))
    with pytest.raises(ledger.InsufficientCredits):
        ledger.hold(alice, job, Decimal("0.000001"))
    account = CreditAccount.objects.get(user=alice)
    assert account.available == 0 and account.held == 1 and account.balance == 1
    assert ledger_sum(alice) == account.available


@pytest.mark.django_db
def test_settle_happens_once(alice):
    ledger.grant(alice, Decimal("5"))
    job = Job.objects.create(
        user=alice, model_slug="m", modality="text", hold_amount=Decimal("2"), hold_open=True
    )
    ledger.hold(alice, job, Decimal("2"))
    assert ledger.settle(job, Decimal("0.5")) == Decimal("0.5")
    assert ledger.settle(job, Decimal("0.5")) == 0
    assert ledger.balances(alice) == (Decimal("4.5"), Decimal("4.5"))
    assert ledger_sum(alice) == Decimal("4.5")


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_concurrent_jobs_keep_the_ledger_exact(alice, monkeypatch):
    """Many threads submit, run, fail and cancel jobs on one account at once."""
    require_postgres()
    ledger.grant(alice, Decimal("0.02"))
    model = get_model("trigram-pydoc")
    monkeypatch.setattr(registry, "enqueue", lambda job: None)
    from playground.engine import textgen

    real = textgen.run_text

    def flaky(params, emit):
        if params["seed"] % 4 == 0:
            raise RuntimeError("injected failure")
        return real(params, emit)

    monkeypatch.setattr(textgen, "run_text", flaky)
    refused = []
    errors = []

    def worker(n):
        rng = random.Random(n)
        try:
            for i in range(8):
                params = jobs.validate_params(
                    model,
                    {
                        "prompt": "The class",
                        "max_tokens": rng.randint(1, 60),
                        "seed": rng.randint(0, 99),
                    },
                )
                try:
                    job = jobs.submit_job(alice, model, params)
                except ApiError as exc:
                    assert exc.status == 402
                    refused.append(exc)
                    continue
                if i % 5 == 4:
                    jobs.cancel_job(job)
                runner.run_job(job.pk)
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    account = CreditAccount.objects.get(user=alice)
    assert account.held == 0
    assert account.available >= 0
    assert ledger_sum(alice) == account.available == account.balance
    assert not Job.objects.filter(hold_open=True).exists()
    assert refused, "the account should have run out of credits at some point"
    for job in Job.objects.filter(user=alice):
        if job.status == "success":
            from playground import pricing

            assert job.cost == pricing.charge(model, job.usage)
        else:
            assert job.cost == 0
        charged = -(job.ledger.filter(kind="capture").aggregate(s=Sum("amount"))["s"] or 0)
        assert charged == job.cost
    spent = Job.objects.filter(user=alice).aggregate(s=Sum("cost"))["s"]
    assert account.balance == Decimal("0.02") - spent
