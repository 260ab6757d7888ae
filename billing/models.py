import secrets
import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone

MONEY = {"max_digits": 20, "decimal_places": 6}


class CreditAccount(models.Model):
    """The lockable row per user; `available` and `held` always equal sums over the ledger."""

    # A deleted user's account stays, anonymised, with its ledger.
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="credit_account",
    )
    available = models.DecimalField(default=Decimal(0), **MONEY)
    held = models.DecimalField(default=Decimal(0), **MONEY)
    # Low-balance email: sent once when a charge takes `available` below the threshold, armed
    # again only when credits coming in lift it back to the threshold or above.
    low_balance_threshold = models.DecimalField(null=True, blank=True, **MONEY)
    low_balance_armed = models.BooleanField(default=True)

    def __str__(self):
        return f"{self.user} ({self.balance})"

    @property
    def balance(self) -> Decimal:
        return self.available + self.held


class Payment(models.Model):
    """A top-up bought through Stripe Checkout; credits move only through the ledger."""

    PENDING, PROCESSING, PAID, FAILED, EXPIRED = (
        "pending",
        "processing",
        "paid",
        "failed",
        "expired",
    )
    STATUSES = [(s, s) for s in (PENDING, PROCESSING, PAID, FAILED, EXPIRED)]

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    account = models.ForeignKey(CreditAccount, on_delete=models.PROTECT, related_name="payments")
    provider = models.CharField(max_length=16, default="stripe")
    credits = models.DecimalField(**MONEY)
    amount_cents = models.PositiveBigIntegerField(help_text="Price in the currency's minor unit")
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=STATUSES, default=PENDING)
    checkout_session = models.CharField(max_length=255, unique=True, null=True, blank=True)
    payment_intent = models.CharField(max_length=255, blank=True, db_index=True)
    # Highest cumulative refund Stripe has reported (refund events may come in any order).
    refunded_cents = models.PositiveBigIntegerField(default=0)
    # Net credits the ledger holds for this payment, and refunded credits that could not be
    # taken back because they were already spent (never below zero, CONTRACT §8).
    credited = models.DecimalField(default=Decimal(0), **MONEY)
    written_off = models.DecimalField(default=Decimal(0), **MONEY)
    created = models.DateTimeField(default=timezone.now)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self):
        return f"{self.credits} credits ({self.status})"

    @property
    def price(self) -> Decimal:
        return Decimal(self.amount_cents) / 100

    @property
    def refunded(self) -> Decimal:
        return Decimal(self.refunded_cents) / 100


class StripeEvent(models.Model):
    """Every webhook event handled, by Stripe's event id: a replay or a duplicate does nothing."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    payment = models.ForeignKey(
        Payment, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    # For a refund that arrives before its checkout completed: applied when the payment is known.
    payment_intent = models.CharField(max_length=255, blank=True, db_index=True)
    amount_refunded = models.PositiveBigIntegerField(null=True, blank=True)
    received = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"{self.type} {self.event_id}"


def new_code() -> str:
    # 16 characters from an alphabet without look-alikes (no 0/O, 1/I/L): 80 bits.
    alphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
    raw = "".join(secrets.choice(alphabet) for _ in range(16))
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


class RedeemCode(models.Model):
    """A code worth `amount` credits, for up to `max_uses` different users, until `expires_at`."""

    code = models.CharField(max_length=64, unique=True, default=new_code)
    amount = models.DecimalField(**MONEY)
    expires_at = models.DateTimeField(null=True, blank=True)
    max_uses = models.PositiveIntegerField(default=1)
    uses = models.PositiveIntegerField(default=0)
    batch = models.CharField(max_length=100, blank=True, help_text="A label for the batch")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(uses__lte=models.F("max_uses")), name="redeem_uses_within_max"
            )
        ]

    def __str__(self):
        return self.code


class Redemption(models.Model):
    code = models.ForeignKey(RedeemCode, on_delete=models.PROTECT, related_name="redemptions")
    account = models.ForeignKey(CreditAccount, on_delete=models.PROTECT, related_name="+")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["code", "account"], name="one_redemption_per_account")
        ]

    def __str__(self):
        return f"{self.code_id} by {self.account_id}"


class LedgerEntry(models.Model):
    """One append-only change of an account's available credits.

    Each row names what it belongs to: a job (hold, capture, release), a payment (purchase,
    refund), a redeem code, or the operator who made it (grant, adjustment); and a reason.
    """

    KINDS = [
        ("grant", "grant"),
        ("purchase", "purchase"),
        ("hold", "hold"),
        ("capture", "capture"),
        ("release", "release"),
        ("refund", "refund"),
        ("adjustment", "adjustment"),
    ]
    account = models.ForeignKey(CreditAccount, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=16, choices=KINDS)
    amount = models.DecimalField(**MONEY)
    job = models.ForeignKey(
        "playground.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="ledger"
    )
    payment = models.ForeignKey(
        Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="entries"
    )
    redeem_code = models.ForeignKey(
        RedeemCode, null=True, blank=True, on_delete=models.PROTECT, related_name="entries"
    )
    operator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The staff user who made this change",
    )
    reason = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(fields=["account", "-id"]),
            # A search by kind, newest first (a rare kind among millions of rows included).
            models.Index(fields=["account", "kind", "-id"], name="ledger_account_kind_id"),
        ]

    def __str__(self):
        return f"{self.kind} {self.amount}"


class UsageDay(models.Model):
    """What an account was charged per UTC day, model and API key: the usage charts' rollup.

    Kept by `ledger.settle` in the charge's own transaction (under the account lock), so it
    always equals the sum of the capture rows; the charts then read at most a few hundred rows
    whatever the size of the ledger.
    """

    account = models.ForeignKey(CreditAccount, on_delete=models.CASCADE, related_name="usage")
    day = models.DateField()
    model_slug = models.CharField(max_length=100)
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    jobs = models.PositiveIntegerField(default=0)
    credits = models.DecimalField(default=Decimal(0), **MONEY)

    class Meta:
        indexes = [models.Index(fields=["account", "day"])]

    def __str__(self):
        return f"{self.day} {self.model_slug} {self.credits}"
