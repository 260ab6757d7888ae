"""Stripe top-ups: Checkout against a local fake Stripe, and signed webhooks (no network).

Payloads are signed here exactly as Stripe signs them: header `t=<unix time>,v1=<hex HMAC-SHA256
of "<t>.<body>" keyed with the endpoint secret>`; the view verifies them with the stripe
library's own `stripe.Webhook.construct_event`.
"""

import hashlib
import hmac
import json
import secrets
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
import stripe
from django.db import connections
from django.db.models import Sum

from billing import ledger, payments
from billing.models import CreditAccount, LedgerEntry, Payment, StripeEvent
from tests.conftest import require_postgres

SECRET = "whsec_test_" + "x" * 24
WEBHOOK = "/billing/stripe/webhook"


@pytest.fixture(autouse=True)
def stripe_keys(settings):
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    settings.PLAYGROUND_CREDIT_PACKS = [(Decimal("10"), 500), (Decimal("50"), 2000)]
    settings.PLAYGROUND_CREDIT_CURRENCY = "eur"


def sign(body: str, secret: str = SECRET, at: int | None = None) -> str:
    at = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{at}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def event(kind: str, obj: dict, event_id: str | None = None) -> str:
    return json.dumps(
        {
            "id": event_id or "evt_" + secrets.token_hex(8),
            "object": "event",
            "api_version": "2026-09-30",
            "created": int(time.time()),
            "type": kind,
            "data": {"object": obj},
        }
    )


def session(payment: Payment, status: str = "paid", intent: str = "pi_1") -> dict:
    return {
        "id": payment.checkout_session or "cs_test_1",
        "object": "checkout.session",
        "client_reference_id": str(payment.public_id),
        "metadata": {"payment": str(payment.public_id)},
        "payment_intent": intent,
        "payment_status": status,
        "amount_total": payment.amount_cents,
        "currency": payment.currency,
    }


def charge(intent: str = "pi_1", refunded: int = 500) -> dict:
    return {"id": "ch_1", "object": "charge", "payment_intent": intent, "amount_refunded": refunded}


def post(client, body: str, signature: str | None = None):
    headers = {"HTTP_STRIPE_SIGNATURE": sign(body) if signature is None else signature}
    return client.post(WEBHOOK, body, content_type="application/json", **headers)


@pytest.fixture
def payment(alice):
    return Payment.objects.create(
        account=ledger.account_for(alice),
        credits=Decimal("10"),
        amount_cents=500,
        currency="eur",
        checkout_session="cs_test_1",
    )


def purchased(user) -> Decimal:
    rows = LedgerEntry.objects.filter(account__user=user, kind__in=["purchase", "refund"])
    return rows.aggregate(s=Sum("amount"))["s"] or Decimal(0)


def test_paid_checkout_credits_once_with_a_ledger_row_naming_the_payment(client, alice, payment):
    body = event("checkout.session.completed", session(payment))
    response = post(client, body)
    assert response.status_code == 200
    assert ledger.balances(alice) == (Decimal(10), Decimal(10))
    row = LedgerEntry.objects.get(account__user=alice)
    assert (row.kind, row.payment, row.amount) == ("purchase", payment, Decimal(10))
    payment.refresh_from_db()
    assert payment.status == "paid" and payment.payment_intent == "pi_1"
    # A replay of the same delivery credits nothing more.
    assert post(client, body).status_code == 200
    assert post(client, body, sign(body, at=int(time.time()) - 10)).status_code == 200
    assert ledger.balances(alice)[0] == Decimal(10)
    assert StripeEvent.objects.count() == 1


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "t=1,v1=deadbeef",
        "garbage",
        sign("{}"),  # a valid signature of another body
        sign("X", secret="whsec_other"),
    ],
)
def test_forged_or_missing_signature_is_400_and_credits_nothing(client, alice, payment, signature):
    body = event("checkout.session.completed", session(payment))
    if signature == sign("X", secret="whsec_other"):
        signature = sign(body, secret="whsec_other")
    response = post(client, body, signature)
    assert response.status_code == 400
    assert ledger.balances(alice)[0] == 0
    assert not StripeEvent.objects.exists()


def test_stale_signature_is_refused(client, alice, payment):
    body = event("checkout.session.completed", session(payment))
    assert post(client, body, sign(body, at=int(time.time()) - 3600)).status_code == 400
    assert ledger.balances(alice)[0] == 0


def test_not_json_is_400(client, alice):
    assert post(client, "not json").status_code == 400


def test_async_payment_completed_then_succeeded_in_either_order(client, alice, payment):
    pending = event("checkout.session.completed", session(payment, status="unpaid"))
    succeeded = event("checkout.session.async_payment_succeeded", session(payment))
    assert post(client, succeeded).status_code == 200
    assert post(client, pending).status_code == 200  # late, must not downgrade
    payment.refresh_from_db()
    assert payment.status == "paid"
    assert purchased(alice) == Decimal(10)


def test_async_payment_pending_then_failed(client, alice, payment):
    post(client, event("checkout.session.completed", session(payment, status="unpaid")))
    payment.refresh_from_db()
    assert payment.status == "processing"
    post(client, event("checkout.session.async_payment_failed", session(payment, status="unpaid")))
    payment.refresh_from_db()
    assert payment.status == "failed" and ledger.balances(alice)[0] == 0


def test_refunds_take_back_the_refunded_share_once(client, alice, payment):
    post(client, event("checkout.session.completed", session(payment)))
    post(client, event("charge.refunded", charge(refunded=200)))  # 2 of 5 EUR
    assert purchased(alice) == Decimal(6)
    post(client, event("charge.refunded", charge(refunded=500)))  # then all of it
    post(client, event("charge.refunded", charge(refunded=200)))  # a late, older event
    assert purchased(alice) == 0
    kinds = list(LedgerEntry.objects.filter(payment=payment).values_list("kind", flat=True))
    assert sorted(kinds) == ["purchase", "refund", "refund"]


def test_refund_before_the_checkout_event(client, alice, payment):
    post(client, event("charge.refunded", charge(refunded=500)))
    post(client, event("checkout.session.completed", session(payment)))
    assert purchased(alice) == 0
    payment.refresh_from_db()
    assert payment.status == "paid" and payment.refunded_cents == 500


def test_refund_of_spent_credits_never_goes_below_zero(client, alice, payment):
    post(client, event("checkout.session.completed", session(payment)))
    ledger.adjust(alice, Decimal("-7"), "spent elsewhere")
    post(client, event("charge.refunded", charge(refunded=500)))
    account = CreditAccount.objects.get(user=alice)
    assert account.available == 0
    payment.refresh_from_db()
    assert payment.written_off == Decimal(7) and payment.credited == Decimal(7)
    post(client, event("charge.refunded", charge(refunded=500)))
    assert CreditAccount.objects.get(user=alice).available == 0
    ledger.grant(alice, Decimal(5), "later")
    post(client, event("charge.refunded", charge(refunded=500)))  # never takes later credits
    assert ledger.balances(alice)[0] == Decimal(5)


def test_a_session_for_another_amount_credits_nothing(client, alice, payment):
    obj = {**session(payment), "amount_total": 1}
    response = post(client, event("checkout.session.completed", obj))
    assert response.status_code == 200 and b"differs" in response.content
    assert ledger.balances(alice)[0] == 0


def test_unknown_session_is_ignored(client, alice):
    obj = {"id": "cs_other", "client_reference_id": None, "metadata": {}, "payment_status": "paid"}
    response = post(client, event("checkout.session.completed", obj))
    assert response.status_code == 200 and b"ignored" in response.content
    assert ledger.balances(alice)[0] == 0


def test_without_keys_no_button_and_no_webhook(client, alice, settings):
    settings.STRIPE_SECRET_KEY = ""
    client.force_login(alice)
    page = client.get("/billing/").content.decode()
    assert "not configured" in page and "buy-credits" not in page and "/billing/buy" not in page
    assert client.post("/billing/buy", {"pack": "0"}).status_code == 302
    assert not Payment.objects.exists()
    body = event("checkout.session.completed", {})
    assert post(client, body).status_code == 404


class FakeStripe(BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        FakeStripe.requests.append((self.path, parse_qs(body), dict(self.headers)))
        reply = json.dumps(
            {
                "id": "cs_test_fake",
                "object": "checkout.session",
                "url": "https://checkout.stripe.com/c/pay/cs_test_fake",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_stripe(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeStripe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(stripe, "api_base", f"http://127.0.0.1:{server.server_port}")
    FakeStripe.requests = []
    yield FakeStripe.requests
    server.shutdown()


def test_buy_creates_a_checkout_session_and_redirects(client, alice, fake_stripe):
    client.force_login(alice)
    page = client.get("/billing/").content.decode()
    assert "50 credits" in page and "20.00 EUR" in page
    response = client.post("/billing/buy", {"pack": "1"})
    assert response.status_code == 302
    assert response["Location"] == "https://checkout.stripe.com/c/pay/cs_test_fake"
    payment = Payment.objects.get()
    assert payment.checkout_session == "cs_test_fake" and payment.status == "pending"
    assert (payment.credits, payment.amount_cents, payment.currency) == (50, 2000, "eur")
    path, form, headers = fake_stripe[0]
    assert path == "/v1/checkout/sessions"
    assert form["line_items[0][price_data][unit_amount]"] == ["2000"]
    assert form["client_reference_id"] == [str(payment.public_id)]
    assert form["success_url"][0].endswith(f"/billing/receipts/{payment.public_id}/")
    assert headers["Authorization"] == "Bearer sk_test_fake"
    assert headers["Idempotency-Key"] == f"checkout-{payment.public_id}"
    assert ledger.balances(alice)[0] == 0  # nothing until the webhook says paid
    assert client.post("/billing/buy", {"pack": "9"}).status_code == 302
    assert Payment.objects.count() == 1


def test_buy_when_stripe_is_down(client, alice, monkeypatch):
    monkeypatch.setattr(stripe, "api_base", "http://127.0.0.1:9")
    client.force_login(alice)
    response = client.post("/billing/buy", {"pack": "0"}, follow=True)
    assert b"payment provider is unavailable" in response.content


def test_receipt_is_owner_only(client, alice, bob, payment):
    post(client, event("checkout.session.completed", session(payment)))
    client.force_login(alice)
    page = client.get(f"/billing/receipts/{payment.public_id}/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "5.00 EUR" in text and "paid" in text and "pi_1" in text
    assert f"/billing/receipts/{payment.public_id}/" in client.get("/billing/").content.decode()
    client.force_login(bob)
    assert client.get(f"/billing/receipts/{payment.public_id}/").status_code == 404
    client.logout()
    assert client.get(f"/billing/receipts/{payment.public_id}/").status_code == 302


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_deliveries_credit_once(alice):
    """The same event delivered 8 times at once, plus its sibling events, on PostgreSQL."""
    require_postgres()
    from django.test import Client

    payment = Payment.objects.create(
        account=ledger.account_for(alice), credits=Decimal(10), amount_cents=500, currency="eur"
    )
    completed = event("checkout.session.completed", session(payment), "evt_same")
    succeeded = event("checkout.session.async_payment_succeeded", session(payment), "evt_other")
    bodies = [completed] * 8 + [succeeded] * 4
    barrier = threading.Barrier(len(bodies))
    statuses, errors = [], []

    def deliver(body):
        try:
            barrier.wait()
            statuses.append(post(Client(), body).status_code)
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and statuses == [200] * len(bodies)
    assert purchased(alice) == Decimal(10)
    assert StripeEvent.objects.count() == 2
    account = CreditAccount.objects.get(user=alice)
    total = LedgerEntry.objects.filter(account=account).aggregate(s=Sum("amount"))["s"]
    assert account.available == total == Decimal(10)


def test_credit_packs_setting_fails_loudly():
    from django.core.exceptions import ImproperlyConfigured

    from playground.settings import _credit_packs

    assert _credit_packs("10=5, 2.5=0.99") == [(Decimal(10), 500), (Decimal("2.5"), 99)]
    for bad in ["10", "10=x", "0=5", "10=0", "10=0.001", "a=b=c"]:
        with pytest.raises(ImproperlyConfigured):
            _credit_packs(bad)


def test_owed_rounds_down_the_refunded_share(payment):
    payment.credits, payment.amount_cents, payment.status = Decimal(10), 300, Payment.PAID
    payment.refunded_cents = 100
    assert payments.owed(payment) == Decimal("6.666666")
    payment.status = Payment.PROCESSING
    assert payments.owed(payment) == 0


def test_expired_checkout_never_downgrades_a_paid_one(client, alice, payment):
    post(client, event("checkout.session.expired", session(payment, status="unpaid")))
    payment.refresh_from_db()
    assert payment.status == "expired" and ledger.balances(alice)[0] == 0
    post(client, event("checkout.session.completed", session(payment)))
    post(client, event("checkout.session.async_payment_failed", session(payment, "unpaid")))
    payment.refresh_from_db()
    assert payment.status == "paid" and ledger.balances(alice)[0] == Decimal(10)
