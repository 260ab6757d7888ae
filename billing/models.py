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

    def __str__(self):
        return f"{self.user} ({self.balance})"

    @property
    def balance(self) -> Decimal:
        return self.available + self.held


class LedgerEntry(models.Model):
    """One append-only change of an account's available credits."""

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
    reason = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["account", "-id"])]

    def __str__(self):
        return f"{self.kind} {self.amount}"
