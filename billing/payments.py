"""Stripe top-ups: Checkout Sessions for credit packs, and the webhook that credits them.

Credits follow one convergent rule (`_sync`): a payment's net credits in the ledger move toward
what it is owed now (its credits when paid, less the refunded share), under the payment's row
lock. So each event only records facts (paid, refunded up to N) and then syncs: a replayed,
duplicated or out-of-order event can never credit twice or take back twice. Events are also
recorded by Stripe's event id (unique), so a replay does nothing at all.
"""

import json
import logging
import uuid
from decimal import ROUND_DOWN, Decimal

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import ledger
from .models import Payment, StripeEvent

log = logging.getLogger(__name__)


class NotConfigured(Exception):
    pass


def configured() -> bool:
    return bool(settings.STRIPE_SECRET_KEY and settings.STRIPE_WEBHOOK_SECRET)


def packs() -> list[dict]:
    """The credit packs on sale: [{"index", "credits", "cents", "price", "currency"}]."""
    return [
        {
            "index": i,
            "credits": credits,
            "cents": cents,
            "price": Decimal(cents) / 100,
            "currency": settings.PLAYGROUND_CREDIT_CURRENCY,
        }
        for i, (credits, cents) in enumerate(settings.PLAYGROUND_CREDIT_PACKS)
    ]


def _client() -> stripe.StripeClient:
    # stripe.api_base is read per call so tests can point it at a local fake server.
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": stripe.api_base},
        max_network_retries=2,
    )


def start_checkout(user, pack: dict, *, receipt_url, cancel_url: str) -> str:
    """Create a pending Payment and its Checkout Session; returns the URL to send the user to.

    `receipt_url(payment_id)` is where Stripe sends the user back after paying.
    """
    if not configured():
        raise NotConfigured()
    payment = Payment.objects.create(
        account=ledger.account_for(user),
        credits=pack["credits"],
        amount_cents=pack["cents"],
        currency=pack["currency"],
    )
    ref = str(payment.public_id)
    session = _client().v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": pack["currency"],
                        "unit_amount": pack["cents"],
                        "product_data": {"name": f"{ledger.fmt(pack['credits'])} credits"},
                    },
                }
            ],
            "client_reference_id": ref,
            "metadata": {"payment": ref},
            "payment_intent_data": {"metadata": {"payment": ref}},
            "customer_email": user.email,
            "success_url": receipt_url(ref),
            "cancel_url": cancel_url,
        },
        # A retried create (network blip) returns the same session, never a second one.
        options={"idempotency_key": f"checkout-{ref}"},
    )
    Payment.objects.filter(pk=payment.pk).update(checkout_session=session.id)
    return session.url


def handle_webhook(payload: bytes, signature: str | None) -> str:
    """Verify and apply one webhook delivery; returns what happened (for logs and tests).

    Raises ValueError or stripe.SignatureVerificationError for a bad payload or signature
    (the view answers 400 and nothing changes).
    """
    event = stripe.Webhook.construct_event(
        payload.decode("utf-8"), signature, settings.STRIPE_WEBHOOK_SECRET
    )
    # The verified body as plain dicts (StripeObject has no .get).
    obj = json.loads(payload)["data"]["object"]
    try:
        with transaction.atomic():
            record = StripeEvent.objects.create(event_id=event.id, type=event.type)
            return _apply(event.type, obj, record)
    except IntegrityError:
        # The same event id arrived before (a replay, or Stripe's at-least-once delivery).
        if StripeEvent.objects.filter(event_id=event.id).exists():
            return "duplicate"
        raise


def _apply(kind: str, obj: dict, record: StripeEvent) -> str:
    if kind.startswith("checkout.session."):
        payment = _payment_for_session(obj)
        if payment is None:
            return "ignored: unknown checkout session"
        record.payment = payment
        record.save(update_fields=["payment"])
        total, currency = obj.get("amount_total"), (obj.get("currency") or "").lower()
        if (total is not None and total != payment.amount_cents) or (
            currency and currency != payment.currency
        ):
            # Not the price we asked for: credit nothing, leave it to the operator.
            log.error("payment %s: Stripe says %s %s", payment.public_id, total, currency)
            return "ignored: amount or currency differs from the payment"
        if obj.get("payment_intent") and not payment.payment_intent:
            payment.payment_intent = obj["payment_intent"]
            _take_early_refunds(payment)
        if kind == "checkout.session.async_payment_succeeded" or (
            kind == "checkout.session.completed" and obj.get("payment_status") == "paid"
        ):
            payment.status = Payment.PAID
            payment.paid_at = payment.paid_at or timezone.now()
        elif payment.status != Payment.PAID:
            # Never downgrade a paid payment: events can arrive in any order.
            payment.status = {
                "checkout.session.completed": Payment.PROCESSING,
                "checkout.session.async_payment_failed": Payment.FAILED,
                "checkout.session.expired": Payment.EXPIRED,
            }.get(kind, payment.status)
        payment.save()
        _sync(payment)
        return f"payment {payment.status}"
    if kind == "charge.refunded":
        intent = obj.get("payment_intent") or ""
        refunded = int(obj.get("amount_refunded") or 0)
        record.payment_intent = intent
        record.amount_refunded = refunded
        payment = _payment_for_refund(obj, intent)
        record.payment = payment
        record.save(update_fields=["payment", "payment_intent", "amount_refunded"])
        if payment is None:
            # The checkout's own event may still be on its way: applied when it comes.
            return "refund kept for later"
        payment.refunded_cents = max(payment.refunded_cents, refunded)
        payment.save(update_fields=["refunded_cents"])
        _sync(payment)
        return "refund applied"
    return "ignored"


def _ref(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _payment_for_session(obj):
    ref = _ref(obj.get("client_reference_id") or (obj.get("metadata") or {}).get("payment"))
    payments = Payment.objects.select_for_update()
    if ref:
        return payments.filter(public_id=ref).first()
    return payments.filter(checkout_session=obj.get("id")).first()


def _payment_for_refund(obj, intent: str):
    payments = Payment.objects.select_for_update()
    ref = _ref((obj.get("metadata") or {}).get("payment"))
    if ref:
        found = payments.filter(public_id=ref).first()
        if found is not None:
            if intent and not found.payment_intent:
                found.payment_intent = intent
                found.save(update_fields=["payment_intent"])
            return found
    if intent:
        return payments.filter(payment_intent=intent).first()
    return None


def _take_early_refunds(payment: Payment) -> None:
    """Refund events that arrived before the payment's checkout events named its intent."""
    early = StripeEvent.objects.filter(
        type="charge.refunded", payment__isnull=True, payment_intent=payment.payment_intent
    )
    for refund in early:
        payment.refunded_cents = max(payment.refunded_cents, refund.amount_refunded or 0)
    early.update(payment=payment)


def owed(payment: Payment) -> Decimal:
    """Credits a payment is worth now: all when paid, less the refunded share (rounded down)."""
    if payment.status != Payment.PAID or not payment.amount_cents:
        return Decimal(0)
    kept = max(payment.amount_cents - payment.refunded_cents, 0)
    share = payment.credits * kept / payment.amount_cents
    return share.quantize(ledger.QUANTUM, rounding=ROUND_DOWN)


def _sync(payment: Payment) -> None:
    """Move the payment's ledger credits to `owed` (caller holds the payment row lock)."""
    target = owed(payment)
    current = payment.credited - payment.written_off
    if target > current:
        ledger.purchase(
            payment,
            target - current,
            reason=f"top-up: {ledger.fmt(payment.credits)} credits "
            f"for {payment.price:.2f} {payment.currency.upper()}",
        )
        payment.credited += target - current
    elif target < current:
        wanted = current - target
        taken = ledger.refund(
            payment,
            wanted,
            reason=f"refund of {payment.refunded:.2f} {payment.currency.upper()} (Stripe)",
        )
        payment.credited -= taken
        payment.written_off += wanted - taken
        if wanted > taken:
            log.warning(
                "payment %s refunded: %s credits already spent", payment.public_id, wanted - taken
            )
    else:
        return
    payment.save(update_fields=["credited", "written_off"])
