"""Redeem codes: batches from the admin, once per code per account, max uses exact under load."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connections
from django.db.models import Sum
from django.utils import timezone

from accounts.models import User
from billing import ledger, redeem
from billing.models import LedgerEntry, RedeemCode, Redemption
from tests.conftest import require_postgres


@pytest.fixture
def code(db):
    return redeem.create_batch(1, Decimal("2.5"), max_uses=2, batch="t")[0]


def test_redeem_once_per_account(alice, bob, code):
    typed = code.code.lower().replace("-", "") + "  "
    assert redeem.redeem(alice, typed) == code
    with pytest.raises(redeem.RedeemError, match="already redeemed"):
        redeem.redeem(alice, code.code)
    redeem.redeem(bob, code.code)
    carol = User.objects.create_user(email="carol@example.com", password="carol-pass-1")
    with pytest.raises(redeem.RedeemError, match="used up"):
        redeem.redeem(carol, code.code)
    assert ledger.balances(alice) == (Decimal("2.5"), Decimal("2.5"))
    assert ledger.balances(carol)[0] == 0
    row = LedgerEntry.objects.get(account__user=alice)
    assert (row.kind, row.redeem_code, row.amount) == ("grant", code, Decimal("2.5"))
    assert code.code in row.reason
    code.refresh_from_db()
    assert code.uses == 2


def test_expired_and_unknown_codes(alice, db):
    old = redeem.create_batch(1, Decimal(1), expires_at=timezone.now() - timedelta(seconds=1))[0]
    with pytest.raises(redeem.RedeemError, match="expired"):
        redeem.redeem(alice, old.code)
    with pytest.raises(redeem.RedeemError, match="does not exist"):
        redeem.redeem(alice, "NOPE-NOPE-NOPE-NOPE")
    assert not LedgerEntry.objects.exists()


def test_redeem_on_the_billing_page(client, alice, code):
    client.force_login(alice)
    response = client.post("/billing/redeem", {"code": "WRONG"})
    assert response.status_code == 400 and b"does not exist" in response.content
    assert client.post("/billing/redeem", {"code": code.code}).status_code == 302
    again = client.post("/billing/redeem", {"code": code.code})
    assert again.status_code == 400 and b"already redeemed" in again.content
    assert ledger.balances(alice)[0] == Decimal("2.5")


def test_admin_creates_a_batch(client, db):
    staff = User.objects.create_user(
        email="ops@example.com", password="ops-password-1", is_staff=True, is_superuser=True
    )
    client.force_login(staff)
    assert b"Create a batch" in client.get("/admin/billing/redeemcode/").content
    response = client.post(
        "/admin/billing/redeemcode/batch/",
        {"count": 25, "amount": "3", "max_uses": 4, "expires_at": "2099-01-31 23:59", "batch": "m"},
    )
    assert response.status_code == 200
    codes = RedeemCode.objects.filter(batch="m")
    assert codes.count() == 25 and len({c.code for c in codes}) == 25
    assert all(c.amount == 3 and c.max_uses == 4 and c.created_by == staff for c in codes)
    assert all(c.code in response.content.decode() for c in codes)
    bad = client.post("/admin/billing/redeemcode/batch/", {"count": 0, "amount": "-1"})
    assert bad.status_code == 200 and RedeemCode.objects.count() == 25


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_max_uses_holds_under_concurrency():
    """20 accounts, each in two threads at once, race for a code of 7 uses."""
    require_postgres()
    users = [
        User.objects.create_user(email=f"u{i}@example.com", password="pw-123456789")
        for i in range(20)
    ]
    for user in users:
        ledger.account_for(user)
    code = redeem.create_batch(1, Decimal("1"), max_uses=7)[0]
    barrier = threading.Barrier(len(users) * 2)
    results, errors = [], []

    def attempt(user):
        try:
            barrier.wait()
            redeem.redeem(user, code.code)
            results.append(user.pk)
        except redeem.RedeemError:
            pass
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=attempt, args=(u,)) for u in users for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    code.refresh_from_db()
    assert code.uses == 7 == len(results) == len(set(results))
    assert Redemption.objects.filter(code=code).count() == 7
    total = LedgerEntry.objects.filter(redeem_code=code).aggregate(s=Sum("amount"))["s"]
    assert total == 7


def test_wrong_codes_are_rate_limited(alice, code):
    for _ in range(redeem.MAX_FAILURES):
        with pytest.raises(redeem.RedeemError, match="does not exist"):
            redeem.redeem(alice, "AAAA-BBBB-CCCC-DDDD")
    with pytest.raises(redeem.RedeemError, match="Too many tries"):
        redeem.redeem(alice, code.code)  # even a right code, for now
    assert ledger.balances(alice)[0] == 0
