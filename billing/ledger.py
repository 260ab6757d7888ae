"""Every rule about credits: grants, holds, captures, releases. Exact Decimal arithmetic only.

A hold is a negative ledger row; settling a job releases the whole hold (+hold) and captures
the real cost (-cost), so sum(ledger) == available at every instant and
balance == available + open holds.
"""

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.db import transaction

from .models import CreditAccount, LedgerEntry

QUANTUM = Decimal("0.000001")


class InsufficientCredits(Exception):
    """The account's available credits do not cover the amount."""

    def __init__(self, needed: Decimal, available: Decimal):
        super().__init__(f"This request needs {fmt(needed)} credits; {fmt(available)} available.")
        self.needed = needed
        self.available = available


def fmt(amount: Decimal) -> str:
    """A money amount as the contract's decimal string: no exponent, no trailing zeros."""
    text = format(Decimal(amount).quantize(QUANTUM), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def parse_amount(value) -> Decimal:
    """A non-negative amount with at most 6 fraction digits, or ValueError."""
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError("the amount must be a decimal number >= 0")
    if amount != amount.quantize(QUANTUM):
        raise ValueError("the amount can have at most 6 fraction digits")
    return amount.quantize(QUANTUM)


def round_money(amount: Decimal) -> Decimal:
    return amount.quantize(QUANTUM, rounding=ROUND_HALF_UP)


def account_for(user) -> CreditAccount:
    account, _ = CreditAccount.objects.get_or_create(user=user)
    return account


def _locked(user) -> CreditAccount:
    account_for(user)
    return CreditAccount.objects.select_for_update().get(user=user)


def grant(user, amount: Decimal, reason: str = "", kind: str = "grant") -> Decimal:
    """Add credits; returns the new balance."""
    with transaction.atomic():
        account = _locked(user)
        _credit(account, amount, kind, reason)
        return account.balance


def _credit(account: CreditAccount, amount: Decimal, kind: str, reason: str) -> None:
    if amount:
        LedgerEntry.objects.create(account=account, kind=kind, amount=amount, reason=reason)
        account.available += amount
        account.save(update_fields=["available"])


def grant_once(user, amount: Decimal, reason: str) -> bool:
    """Grant unless a grant with this reason exists (e.g. the signup grant); True if granted."""
    with transaction.atomic():
        account = _locked(user)
        if account.entries.filter(kind="grant", reason=reason).exists():
            return False
        _credit(account, amount, "grant", reason)
        return True


def hold(user, job, amount: Decimal) -> None:
    """Reserve a job's worst-case cost (raises InsufficientCredits), in the job's transaction."""
    with transaction.atomic():
        account = _locked(user)
        if account.available < amount:
            raise InsufficientCredits(amount, account.available)
        LedgerEntry.objects.create(account=account, kind="hold", amount=-amount, job=job)
        account.available -= amount
        account.held += amount
        account.save(update_fields=["available", "held"])


def settle(job, cost: Decimal | None) -> Decimal:
    """Close a job's hold: release it all, then capture `cost` (None or 0: nothing charged).

    The caller has just moved the job to a terminal state with a conditional UPDATE that matched,
    inside the same transaction, so a hold is settled exactly once.
    Returns the amount actually charged (never more than the hold).
    """
    from playground.models import Job

    with transaction.atomic():
        account = _locked(job.user)
        if not Job.objects.filter(pk=job.pk, hold_open=True).update(hold_open=False):
            return Decimal(0)
        held = job.hold_amount
        charged = min(cost or Decimal(0), held)
        LedgerEntry.objects.create(account=account, kind="release", amount=held, job=job)
        if charged:
            LedgerEntry.objects.create(account=account, kind="capture", amount=-charged, job=job)
        account.available += held - charged
        account.held -= held
        account.save(update_fields=["available", "held"])
        return charged


def balances(user) -> tuple[Decimal, Decimal]:
    """(balance, available) for a user."""
    account = account_for(user)
    return account.balance, account.available
