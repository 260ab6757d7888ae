"""Every rule about credits: grants, purchases, refunds, adjustments, holds, captures, releases.

Exact Decimal arithmetic only. A hold is a negative ledger row; settling a job releases the whole
hold (+hold) and captures the real cost (-cost), so sum(ledger) == available at every instant and
balance == available + open holds. Every change takes the account row lock first
(`select_for_update`; SQLite's IMMEDIATE transactions do the same) and never takes `available`
below zero.
"""

import contextlib
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.conf import settings
from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from playground import sql

from .models import CreditAccount, LedgerEntry, UsageDay

QUANTUM = Decimal("0.000001")
# The money columns are DecimalField(max_digits=20, decimal_places=6): 14 digits before the point.
MAX_AMOUNT = Decimal(10) ** 14 - QUANTUM


class KeySpendCapReached(Exception):
    """The API key's spend cap does not leave room for the amount."""

    def __init__(self, needed: Decimal, remaining: Decimal):
        super().__init__(
            f"This request needs {fmt(needed)} credits; "
            f"the key's spend cap leaves {fmt(remaining)}."
        )
        self.needed = needed
        self.remaining = remaining


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
    if amount > MAX_AMOUNT:
        # Also keeps quantize() below within the decimal context (InvalidOperation, a 500).
        raise ValueError(f"the amount can be at most {fmt(MAX_AMOUNT)}")
    if amount != amount.quantize(QUANTUM):
        raise ValueError("the amount can have at most 6 fraction digits")
    return amount.quantize(QUANTUM)


def round_money(amount: Decimal) -> Decimal:
    return amount.quantize(QUANTUM, rounding=ROUND_HALF_UP)


def account_for(user) -> CreditAccount:
    account, _ = CreditAccount.objects.get_or_create(user=user)
    return account


def _locked(user) -> CreditAccount:
    # One query when the account exists (always, but for a brand-new user).
    account = _lock_account(user.pk)
    if account is None:
        account_for(user)
        account = _lock_account(user.pk)
    return account


def _lock_account(user_id) -> CreditAccount | None:
    """The account row, locked until the transaction ends (FOR UPDATE where the database has
    it; on SQLite the IMMEDIATE transaction already holds the write lock). A raw query: every
    job reads it twice, and the ORM's compiler costs ten times the query."""
    where = "WHERE user_id = %s"
    if connection.features.has_select_for_update:
        where += " FOR UPDATE"
    rows = sql.fetch(CreditAccount, where, [user_id])
    return rows[0] if rows else None


def _job_entry(account, job, kind: str, amount: Decimal, what: str, reason: str = ""):
    """A ledger row of a job's hold, release or capture; `reason` replaces "<model>: what"."""
    return LedgerEntry(
        account=account,
        kind=kind,
        amount=amount,
        job=job,
        reason=reason or f"{job.model_slug}: {what}",
    )


def _store(account: CreditAccount, *fields: str) -> None:
    """Write these fields of the locked account (the hot path's `save(update_fields=...)`)."""
    sql.update(CreditAccount, account.pk, {name: getattr(account, name) for name in fields})


def grant(
    user, amount: Decimal, reason: str = "", kind: str = "grant", operator=None, **refs
) -> Decimal:
    """Add credits (a grant unless `kind` says otherwise); returns the new balance.

    `operator` is the staff user making it (admin), `refs` the row's payment or redeem_code.
    """
    with transaction.atomic():
        account = _locked(user)
        _credit(account, amount, kind, reason, operator=operator, **refs)
        return account.balance


def _credit(account: CreditAccount, amount: Decimal, kind: str, reason: str, **refs) -> None:
    if amount:
        LedgerEntry.objects.create(
            account=account, kind=kind, amount=amount, reason=reason[:200], **refs
        )
        account.available += amount
        fields = ["available"]
        if amount > 0 and _rearm(account):
            fields.append("low_balance_armed")
        account.save(update_fields=fields)


def _debit(account: CreditAccount, amount: Decimal, kind: str, reason: str, **refs) -> None:
    """Take `amount` (> 0) from available credits, or raise InsufficientCredits."""
    if account.available < amount:
        raise InsufficientCredits(amount, account.available)
    LedgerEntry.objects.create(
        account=account, kind=kind, amount=-amount, reason=reason[:200], **refs
    )
    account.available -= amount
    account.save(update_fields=["available"])


def grant_once(user, amount: Decimal, reason: str) -> bool:
    """Grant unless a grant with this reason exists (e.g. the signup grant); True if granted."""
    with transaction.atomic():
        account = _locked(user)
        if account.entries.filter(kind="grant", reason=reason).exists():
            return False
        _credit(account, amount, "grant", reason)
        return True


def adjust(user, amount: Decimal, reason: str, operator=None, job=None) -> Decimal:
    """An operator's correction, either sign; never below zero available. Returns the balance."""
    if not reason:
        raise ValueError("an adjustment needs a reason")
    with transaction.atomic():
        account = _locked(user)
        if amount > 0:
            _credit(account, amount, "adjustment", reason, operator=operator, job=job)
        elif amount < 0:
            _debit(account, -amount, "adjustment", reason, operator=operator, job=job)
        return account.balance


def purchase(payment, amount: Decimal, reason: str) -> None:
    """Credit a paid top-up (the caller holds the payment's row lock and records `credited`)."""
    with transaction.atomic():
        account = CreditAccount.objects.select_for_update().get(pk=payment.account_id)
        _credit(account, amount, "purchase", reason, payment=payment)


def refund(payment, amount: Decimal, reason: str) -> Decimal:
    """Take back up to `amount` credits of a refunded top-up; returns what was taken.

    Credits already spent stay spent: available never goes below zero (CONTRACT §8), so the
    rest is the caller's to write off.
    """
    with transaction.atomic():
        account = CreditAccount.objects.select_for_update().get(pk=payment.account_id)
        taken = min(amount, account.available)
        if taken > 0:
            _debit(account, taken, "refund", reason, payment=payment)
        return taken


def period_start(period: str, now=None):
    """The start of the current daily/weekly/monthly cap window (UTC); None for a lifetime cap."""
    now = now or timezone.now()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())
    if period == "monthly":
        return day.replace(day=1)
    return None


def key_spend(key, since=None, exclude=None) -> Decimal:
    """What a key's jobs cost since `since` (all time when None), open holds included."""
    from playground.models import Job

    jobs = Job.objects.filter(api_key=key)
    if exclude is not None:
        jobs = jobs.exclude(pk=exclude.pk)
    charged = jobs.filter(hold_open=False)
    if since is not None:
        charged = charged.filter(created__gte=since)
    spent = charged.aggregate(s=Sum("cost"))["s"] or Decimal(0)
    held = jobs.filter(hold_open=True).aggregate(s=Sum("hold_amount"))["s"] or Decimal(0)
    return spent + held


def spend_by_key(keys) -> dict:
    """{key pk: what its jobs cost, open holds included}, in one query."""
    from django.db.models import Case, DecimalField, F, When

    from playground.models import Job

    amount = Case(
        When(hold_open=True, then=F("hold_amount")),
        default=F("cost"),
        output_field=DecimalField(max_digits=20, decimal_places=6),
    )
    rows = (
        Job.objects.filter(api_key__in=keys)
        .values("api_key")
        .annotate(total=Sum(amount))
        .values_list("api_key", "total")
    )
    return {pk: total or Decimal(0) for pk, total in rows}


def key_cap_remaining(key, exclude=None) -> Decimal | None:
    """Room left under the key's cap (None: no cap); `exclude` a job whose hold is being placed."""
    if key is None or key.spend_cap is None:
        return None
    spent = key_spend(key, period_start(key.spend_cap_period), exclude=exclude)
    return max(Decimal(0), key.spend_cap - spent)


def hold(user, job, amount: Decimal, key=None) -> None:
    """Reserve a job's worst-case cost, in the job's transaction.

    Raises InsufficientCredits, or KeySpendCapReached when the key's cap has no room; the
    account row lock also serialises the cap check of all the user's keys.
    """
    # Inside the job's transaction, no savepoint of its own (the submit's hot path): the checks
    # come before any write, and a refusal raises out of that transaction, which rolls back.
    within = transaction.get_connection().in_atomic_block
    with contextlib.nullcontext() if within else transaction.atomic():
        account = _locked(user)
        remaining = key_cap_remaining(key, exclude=job)
        if remaining is not None and remaining < amount:
            raise KeySpendCapReached(amount, remaining)
        if account.available < amount:
            raise InsufficientCredits(amount, account.available)
        sql.insert([_job_entry(account, job, "hold", -amount, "worst case held")])
        account.available -= amount
        account.held += amount
        _store(account, "available", "held")


def settle(job, cost: Decimal | None, reason: str = "") -> Decimal:
    """Close a job's hold: release it all, then capture `cost` (None or 0: nothing charged).

    The caller has just moved the job to a terminal state with a conditional UPDATE that matched,
    inside the same transaction, so a hold is settled exactly once.
    Returns the amount actually charged (never more than the hold).
    """
    from playground.models import Job

    # No savepoint inside the finish's transaction (the hot path): settle raises nothing
    # its callers handle, so any error aborts the whole transition, as it should.
    with transaction.atomic(savepoint=False):
        account = _locked(job.user)
        if not sql.update(Job, job.pk, {"hold_open": False}, where={"hold_open": True}):
            return Decimal(0)
        held = job.hold_amount
        charged = min(cost or Decimal(0), held)
        entries = [_job_entry(account, job, "release", held, "hold released", reason)]
        if charged:
            entries.append(_job_entry(account, job, "capture", -charged, "charged for usage"))
        sql.insert(entries)  # one INSERT: release, then capture
        if charged:
            _add_usage(account, entries[1].created.date(), job, charged)
        account.available += held - charged
        account.held -= held
        fields = ["available", "held"]
        if charged and _crossed_low_balance(account):
            fields.append("low_balance_armed")
        _store(account, *fields)
        return charged


def _add_usage(account: CreditAccount, day, job, charged: Decimal) -> None:
    """Add a charge to the day's rollup (the account lock serialises this read-then-write)."""
    key = {
        "account": account,
        "day": day,
        "model_slug": job.model_slug,
        "api_key_id": job.api_key_id,
    }
    # Raw, like the rest of settle: UPDATE … SET jobs = jobs + 1, credits = credits + charged.
    field = UsageDay._meta.get_field
    params = [
        field("credits").get_db_prep_save(charged, connection),
        account.pk,
        field("day").get_db_prep_save(day, connection),
        job.model_slug,
    ]
    statement = (
        f"UPDATE {UsageDay._meta.db_table} SET jobs = jobs + 1, credits = credits + %s "
        "WHERE account_id = %s AND day = %s AND model_slug = %s AND api_key_id "
    )
    if job.api_key_id is None:
        statement += "IS NULL"
    else:
        statement += "= %s"
        params.append(job.api_key_id)
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        updated = cursor.rowcount
    if not updated:
        UsageDay.objects.create(**key, jobs=1, credits=charged)


def _rearm(account: CreditAccount) -> bool:
    """Credits came in: arm the low-balance email again once available is back at the threshold."""
    threshold = account.low_balance_threshold
    if threshold is None or account.low_balance_armed or account.available < threshold:
        return False
    account.low_balance_armed = True
    return True


def _crossed_low_balance(account: CreditAccount) -> bool:
    """A charge took available below the threshold: one email, sent once the charge commits."""
    threshold = account.low_balance_threshold
    if threshold is None or not account.low_balance_armed or account.available >= threshold:
        return False
    account.low_balance_armed = False
    user, available = account.user, account.available
    if user is not None and user.email:
        transaction.on_commit(lambda: _send_low_balance(user.email, available, threshold))
    return True


def _send_low_balance(email: str, available: Decimal, threshold: Decimal) -> None:
    site = getattr(settings, "PLAYGROUND_SITE_URL", "")
    send_mail(
        "[Playground] Your credit balance is low",
        f"Your available credits fell to {fmt(available)}, below the {fmt(threshold)} you set.\n"
        f"Top up or redeem a code on the billing page: {site}/billing/\n\n"
        "You will not get this email again until your credits are back above the threshold.\n",
        None,
        [email],
        fail_silently=True,
    )


def set_low_balance_threshold(user, threshold: Decimal | None) -> None:
    """Set (None: switch off) the low-balance email threshold; armed at once if above it."""
    with transaction.atomic():
        account = _locked(user)
        account.low_balance_threshold = threshold
        account.low_balance_armed = threshold is None or account.available >= threshold
        account.save(update_fields=["low_balance_threshold", "low_balance_armed"])


def balances(user) -> tuple[Decimal, Decimal]:
    """(balance, available) for a user."""
    account = account_for(user)
    return account.balance, account.available
