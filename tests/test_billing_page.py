"""The billing page: balance, holds, searchable keyset-paginated transactions, charts, CSV."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from accounts import keys
from billing import ledger
from billing.models import CreditAccount, LedgerEntry, UsageDay
from playground import jobs
from playground.catalogue import get_model
from playground.engine import registry, runner
from playground.models import Job


@pytest.fixture
def funded(alice_with_credits, monkeypatch):
    """Alice with 10 credits, one finished job by API key, one still holding credits."""
    monkeypatch.setattr(registry, "enqueue", lambda job: None)
    model = get_model("trigram-pydoc")
    model.per_1k_output = Decimal("1")
    model.save()
    key, _ = keys.create_key(alice_with_credits, "laptop")
    params = jobs.validate_params(model, {"prompt": "The class", "max_tokens": 20, "seed": 3})
    done = jobs.submit_job(alice_with_credits, model, params, api_key=key)
    runner.run_job(done.pk)
    done.refresh_from_db()
    running = jobs.submit_job(alice_with_credits, model, params)
    return alice_with_credits, done, running


def test_login_required(client, db):
    response = client.get("/billing/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert client.get("/billing/transactions.csv").status_code == 302


def test_page_shows_balance_holds_and_charts(client, funded, django_assert_max_num_queries):
    alice, done, running = funded
    client.force_login(alice)
    account = CreditAccount.objects.get(user=alice)
    with django_assert_max_num_queries(16):
        response = client.get("/billing/")
    page = response.content.decode()
    assert response.status_code == 200
    assert f'id="stat-balance">{ledger.fmt(account.balance)}<' in page
    assert f'id="stat-available">{ledger.fmt(account.available)}<' in page
    assert f'id="stat-held">{ledger.fmt(running.hold_amount)}<' in page
    assert str(running.request_id) in page  # the open hold names its job
    assert "1 running job<" in page
    assert page.count("<svg") >= 2 and "<rect" in page
    assert "laptop (" in page  # spend per key
    assert 'href="/billing/"' in page and ">Billing<" in page  # nav
    assert 'id="topups-off"' in page  # no Stripe keys in tests


def test_search_by_kind_reason_and_job(client, funded):
    alice, done, running = funded
    client.force_login(alice)

    def kinds(q):
        page = client.get("/billing/", {"q": q}).content.decode()
        table = page.split('id="transactions"')[1]
        return {k for k, _ in LedgerEntry.KINDS if f"kind-{k}" in table}

    assert kinds("capture") == {"capture"}
    assert kinds(str(done.request_id)) == {"hold", "release", "capture"}
    assert kinds(str(running.request_id)) == {"hold"}
    assert kinds("test") == {"grant"}
    assert kinds("no such thing") == set()
    # htmx gets the table alone.
    htmx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "transactions"}
    part = client.get("/billing/", {"q": "grant"}, **htmx)
    assert part.content.decode().lstrip().startswith('<div id="transactions">')


def test_keyset_pages_cover_every_row_once(client, alice):
    account = ledger.account_for(alice)
    LedgerEntry.objects.bulk_create(
        LedgerEntry(account=account, kind="grant", amount=Decimal(1), reason=f"row {i:03d}")
        for i in range(120)
    )
    client.force_login(alice)
    seen, url, pages = [], "/billing/", 0
    while url:
        response = client.get(url)
        page = response.content.decode()
        seen += [int(x[:3]) for x in page.split(">row ")[1:]]
        pages += 1
        url = None
        if 'rel="next"' in page:
            before = page.split('rel="next" href="?before=')[1].split("#")[0]
            url = f"/billing/?before={before}"
    assert pages == 3
    assert seen == list(range(119, -1, -1))


def test_other_users_rows_never_show(client, funded, bob):
    alice, done, _ = funded
    client.force_login(bob)
    page = client.get("/billing/", {"q": str(done.request_id)}).content.decode()
    assert "No transactions match" in page and "kind-capture" not in page
    body = b"".join(client.get("/billing/transactions.csv").streaming_content).decode()
    assert body.count("\n") == 1  # the header only


def test_transactions_csv(client, funded, monkeypatch):
    from billing import views

    monkeypatch.setattr(views, "CSV_CHUNK", 2)  # several chunks: every row once, in order
    alice, done, _ = funded
    client.force_login(alice)
    response = client.get("/billing/transactions.csv")
    assert response.streaming and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == LedgerEntry.objects.filter(account__user=alice).count() == 5
    assert [int(r["id"]) for r in rows] == sorted((int(r["id"]) for r in rows), reverse=True)
    assert sum(Decimal(r["amount"]) for r in rows) == ledger.balances(alice)[1]
    capture = next(r for r in rows if r["kind"] == "capture")
    assert capture["request_id"] == str(done.request_id) and capture["model"] == "trigram-pydoc"
    filtered = client.get("/billing/transactions.csv", {"q": "capture"})
    assert b"".join(filtered.streaming_content).decode().count("\n") == 2


def charge_days_ago(user, slug: str, amount: str, days: int):
    """A job charged through hold and settle, then moved `days` back in time."""
    job = Job.objects.create(
        user=user, model_slug=slug, modality="text", hold_amount=Decimal(amount), hold_open=True
    )
    ledger.hold(user, job, Decimal(amount))
    ledger.settle(job, Decimal(amount))
    when = timezone.now() - timedelta(days=days)
    LedgerEntry.objects.filter(job=job).update(created=when)
    UsageDay.objects.filter(model_slug=slug, day=timezone.now().date()).update(day=when.date())


def test_usage_csv_and_daily_chart_by_model(client, funded):
    alice, done, _ = funded
    charge_days_ago(alice, "other-model", "0.5", 40)  # outside the chart
    charge_days_ago(alice, "other-model", "0.25", 3)
    client.force_login(alice)
    body = b"".join(client.get("/billing/usage.csv").streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert {(r["model"], r["credits"], r["jobs"]) for r in rows} == {
        ("trigram-pydoc", ledger.fmt(done.cost), "1"),
        ("other-model", "0.25", "1"),
        ("other-model", "0.5", "1"),
    }
    assert next(r for r in rows if r["model"] == "trigram-pydoc")["api_key_prefix"]
    page = client.get("/billing/").content.decode()
    assert "other-model" in page and "0.25 credits" in page and "0.5 credits" not in page


def test_rollup_equals_the_capture_rows(funded):
    alice, done, running = funded
    jobs.cancel_job(running, delivered={"completion_tokens": 2})
    charge_days_ago(alice, "x", "0.125", 0)
    captures = LedgerEntry.objects.filter(account__user=alice, kind="capture")
    rollup = UsageDay.objects.filter(account__user=alice)
    assert rollup.aggregate(s=Sum("credits"))["s"] == -captures.aggregate(s=Sum("amount"))["s"]
    assert rollup.aggregate(s=Sum("jobs"))["s"] == captures.count() == 3


def test_low_balance_threshold_form(client, alice):
    client.force_login(alice)
    assert client.post("/billing/low-balance", {"threshold": "-1"}).status_code == 400
    for huge in ("1e30", "99999999999999999999999"):
        response = client.post("/billing/low-balance", {"threshold": huge})
        assert response.status_code == 400 and b"at most" in response.content
    assert client.post("/billing/low-balance", {"threshold": "2.5"}).status_code == 302
    assert CreditAccount.objects.get(user=alice).low_balance_threshold == Decimal("2.5")
    client.post("/billing/low-balance", {"threshold": ""})
    assert CreditAccount.objects.get(user=alice).low_balance_threshold is None
    assert client.get("/billing/low-balance").status_code == 405
