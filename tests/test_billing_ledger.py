"""Ledger completeness: each row names what it is for; grants, adjustments, operator grants."""

from decimal import Decimal

import pytest
from django.db.models import Sum

from accounts.models import User
from billing import ledger
from billing.models import CreditAccount, LedgerEntry
from playground import jobs, pricing
from playground.catalogue import get_model
from playground.engine import registry, runner


def ledger_sum(user) -> Decimal:
    rows = LedgerEntry.objects.filter(account__user=user)
    return rows.aggregate(s=Sum("amount"))["s"] or Decimal(0)


@pytest.fixture
def staff(db):
    return User.objects.create_user(
        email="ops@example.com", password="ops-password-1", is_staff=True, is_superuser=True
    )


@pytest.mark.django_db
def test_every_job_row_names_its_job_and_a_reason(alice_with_credits, monkeypatch):
    monkeypatch.setattr(registry, "enqueue", lambda job: None)
    model = get_model("trigram-pydoc")
    params = jobs.validate_params(model, {"prompt": "The class", "max_tokens": 8, "seed": 1})
    job = jobs.submit_job(alice_with_credits, model, params)
    runner.run_job(job.pk)
    rows = list(LedgerEntry.objects.filter(job=job).order_by("id"))
    assert [r.kind for r in rows] == ["hold", "release", "capture"]
    assert all(r.reason for r in rows)
    assert "trigram-pydoc" in rows[-1].reason
    assert all(r.job or r.payment or r.redeem_code or r.reason for r in LedgerEntry.objects.all())


@pytest.mark.django_db
def test_adjust_either_sign_never_below_zero(alice, staff):
    ledger.grant(alice, Decimal("3"), reason="test")
    assert ledger.adjust(alice, Decimal("-1.25"), "wrong grant", operator=staff) == Decimal("1.75")
    with pytest.raises(ledger.InsufficientCredits):
        ledger.adjust(alice, Decimal("-2"), "too much", operator=staff)
    ledger.adjust(alice, Decimal("0.5"), "goodwill", operator=staff)
    row = LedgerEntry.objects.filter(kind="adjustment").first()
    assert row.operator == staff and row.reason == "goodwill" and row.amount == Decimal("0.5")
    assert ledger.balances(alice) == (Decimal("2.25"), Decimal("2.25")) == (ledger_sum(alice),) * 2
    with pytest.raises(ValueError):
        ledger.adjust(alice, Decimal("1"), "")


@pytest.mark.django_db
def test_admin_grant_records_the_staff_user(client, alice, staff):
    client.force_login(staff)
    account = CreditAccount.objects.get(user=alice)
    url = f"/admin/billing/creditaccount/{account.pk}/grant/"
    assert client.get(url).status_code == 200
    response = client.post(url, {"kind": "grant", "amount": "7.5", "reason": "conference"})
    assert response.status_code == 302
    row = LedgerEntry.objects.get(account=account)
    assert (row.kind, row.amount, row.operator) == ("grant", Decimal("7.5"), staff)
    assert "conference" in row.reason
    # A negative grant is refused; an adjustment below zero is refused and changes nothing.
    assert client.post(url, {"kind": "grant", "amount": "-1", "reason": "x"}).status_code == 200
    response = client.post(url, {"kind": "adjustment", "amount": "-8", "reason": "x"})
    assert response.status_code == 200 and b"available" in response.content
    assert LedgerEntry.objects.filter(account=account).count() == 1
    assert ledger.balances(alice)[0] == Decimal("7.5")


@pytest.mark.django_db
def test_admin_grant_needs_staff(client, alice):
    client.force_login(alice)
    account = CreditAccount.objects.get(user=alice)
    url = f"/admin/billing/creditaccount/{account.pk}/grant/"
    response = client.post(url, {"kind": "grant", "amount": "100", "reason": "me"})
    assert response.status_code == 302 and "/admin/login" in response["Location"]
    assert not LedgerEntry.objects.exists()


@pytest.mark.django_db
def test_model_admin_shows_prices(client, staff):
    client.force_login(staff)
    model = get_model("trigram-pydoc")
    page = client.get("/admin/playground/aimodel/").content.decode()
    assert "Prices (credits)" in page
    form = client.get(f"/admin/playground/aimodel/{model.pk}/change/").content.decode()
    assert "Credits per 1,000 generated tokens" in form


@pytest.mark.django_db
def test_estimate_matches_the_hold():
    model = get_model("trigram-pydoc")
    model.per_request = Decimal("0.01")
    model.per_1k_input = Decimal("0.2")
    model.per_1k_output = Decimal("0.5")
    params = jobs.validate_params(model, {"prompt": "The class of", "max_tokens": 40})
    tokens = registry.prompt_tokens_bound(model, params)
    est = pricing.estimate(model, {"prompt": "The class of", "max_tokens": 40})
    assert est["max"] == ledger.fmt(pricing.worst_case(model, params, tokens))
    assert est["prompt_tokens"] == tokens > 0
    assert len(est["lines"]) == 3 and est["text"].startswith("at most")
    # A half-filled form still gets a figure: the default max_tokens (128), no prompt yet.
    partial = pricing.estimate(model, {"prompt": "", "max_tokens": "abc"})
    expected = Decimal("0.01") + Decimal("0.064") + Decimal("0.0002") * partial["prompt_tokens"]
    assert Decimal(partial["max"]) == expected
    # Raw form strings work too.
    assert pricing.estimate(model, {"prompt": "The class of", "max_tokens": "40"}) == est


def test_charge_is_exact_decimal():
    class M:
        per_request = Decimal("0.001")
        per_1k_input = Decimal("0.3")
        per_1k_output = Decimal("0.7")
        per_image = Decimal("0.04")
        per_second = Decimal("0.01")

    usage = {"prompt_tokens": 3, "completion_tokens": 7, "images": 2, "seconds": 1.5}
    assert pricing.charge(M, usage) == Decimal("0.001") + Decimal("0.0009") + Decimal(
        "0.0049"
    ) + Decimal("0.08") + Decimal("0.015")


@pytest.mark.django_db
def test_admin_account_links_to_its_ledger(client, alice, bob, staff):
    ledger.grant(alice, Decimal("1"), reason="alice's row")
    ledger.grant(bob, Decimal("2"), reason="bob's row")
    client.force_login(staff)
    account = CreditAccount.objects.get(user=alice)
    change = client.get(f"/admin/billing/creditaccount/{account.pk}/change/").content.decode()
    link = f"/admin/billing/ledgerentry/?account__id__exact={account.pk}"
    assert link in change
    listing = client.get(link)
    assert listing.status_code == 200
    page = listing.content.decode()
    assert "alice&#x27;s row" in page and "bob&#x27;s row" not in page
