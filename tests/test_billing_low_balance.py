"""Low-balance email: one when a charge takes available below the threshold, re-armed by top-ups."""

from decimal import Decimal

import pytest
from django.core import mail

from billing import ledger
from playground.models import Job


def charge(user, amount: str, django_capture_on_commit_callbacks):
    job = Job.objects.create(
        user=user, model_slug="m", modality="text", hold_amount=Decimal(amount), hold_open=True
    )
    with django_capture_on_commit_callbacks(execute=True):
        ledger.hold(user, job, Decimal(amount))
        ledger.settle(job, Decimal(amount))


@pytest.mark.django_db
def test_one_email_per_crossing(alice, django_capture_on_commit_callbacks):
    ledger.grant(alice, Decimal("10"), "test")
    ledger.set_low_balance_threshold(alice, Decimal("5"))
    charge(alice, "4", django_capture_on_commit_callbacks)  # 6 left: above
    assert not mail.outbox
    charge(alice, "2", django_capture_on_commit_callbacks)  # 4 left: crossed
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"] and "4" in message.body and "5" in message.body
    charge(alice, "1", django_capture_on_commit_callbacks)  # still below: no second email
    charge(alice, "1", django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 1
    ledger.grant(alice, Decimal("1"), "top-up")  # 3: still below, not re-armed
    charge(alice, "1", django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 1
    ledger.grant(alice, Decimal("10"), "top-up")  # 12: back above, re-armed
    charge(alice, "8", django_capture_on_commit_callbacks)  # 4: crossed again
    assert len(mail.outbox) == 2


@pytest.mark.django_db
def test_no_email_without_threshold_or_when_rolled_back(alice, django_capture_on_commit_callbacks):
    ledger.grant(alice, Decimal("10"), "test")
    charge(alice, "9", django_capture_on_commit_callbacks)
    assert not mail.outbox
    ledger.set_low_balance_threshold(alice, Decimal("5"))
    ledger.grant(alice, Decimal("10"), "test")
    job = Job.objects.create(
        user=alice, model_slug="m", modality="text", hold_amount=Decimal(9), hold_open=True
    )
    ledger.hold(alice, job, Decimal(9))
    from django.db import transaction

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        try:
            with transaction.atomic():
                ledger.settle(job, Decimal(9))
                raise RuntimeError("the job's transaction fails")
        except RuntimeError:
            pass
    assert not callbacks and not mail.outbox


@pytest.mark.django_db
def test_email_is_sent_on_commit_only(alice, django_capture_on_commit_callbacks):
    ledger.grant(alice, Decimal("2"), "test")
    ledger.set_low_balance_threshold(alice, Decimal("1"))
    job = Job.objects.create(
        user=alice, model_slug="m", modality="text", hold_amount=Decimal(2), hold_open=True
    )
    ledger.hold(alice, job, Decimal(2))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        ledger.settle(job, Decimal("1.5"))
    assert len(callbacks) == 1 and not mail.outbox
    callbacks[0]()
    assert len(mail.outbox) == 1
