"""What the billing page and its CSV exports read: all aggregates are computed in SQL."""

import uuid
from datetime import timedelta
from decimal import Decimal

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from .models import LedgerEntry, UsageDay

PAGE_SIZE = 50
KINDS = {k for k, _ in LedgerEntry.KINDS}


def search(account, q: str = ""):
    """The account's ledger rows matching `q`: a kind, a job or payment id, or reason/model text."""
    rows = LedgerEntry.objects.filter(account=account)
    q = (q or "").strip()
    if not q:
        return rows
    if q.lower() in KINDS:
        return rows.filter(kind=q.lower())
    try:
        ref = uuid.UUID(q)
    except ValueError:
        ref = None
    if ref is not None:
        # Ids first, then the ledger's own indexed columns: no join over the account's rows.
        from playground.models import Job

        from .models import Payment

        match = Q(pk__in=[])
        job = Job.objects.filter(request_id=ref, user=account.user_id).values("id").first()
        if job:
            match |= Q(job_id=job["id"])
        payment = Payment.objects.filter(public_id=ref, account=account).values("id").first()
        if payment:
            match |= Q(payment_id=payment["id"])
        return rows.filter(match)
    # Job rows' reasons start with the model id, so a text search needs no join.
    return rows.filter(Q(reason__icontains=q) | Q(redeem_code__code=q.upper()))


def transactions_page(account, q: str = "", before: int | None = None, size: int = PAGE_SIZE):
    """One page, newest first, by keyset on the id (a deep page costs what the first does).

    Returns (rows, next_before): `next_before` is the cursor of the next (older) page or None.
    """
    rows = search(account, q)
    if before is not None:
        rows = rows.filter(id__lt=before)
    page = list(
        rows.select_related("job", "payment", "redeem_code", "operator").order_by("-id")[: size + 1]
    )
    more = len(page) > size
    page = page[:size]
    return page, (page[-1].id if more else None)


def daily_usage(account, days: int = 30, now=None):
    """Credits charged per UTC day and model over the last `days` days (from the rollup).

    Returns (day list oldest first, {model: [amount per day]} biggest first, total).
    """
    today = (now or timezone.now()).date()
    first = today - timedelta(days=days - 1)
    rows = (
        UsageDay.objects.filter(account=account, day__gte=first)
        .values("day", "model_slug")
        .annotate(total=Sum("credits"))
        .order_by()
    )
    day_list = [first + timedelta(days=i) for i in range(days)]
    index = {d: i for i, d in enumerate(day_list)}
    series: dict[str, list] = {}
    total = Decimal(0)
    for row in rows:
        if row["day"] not in index:
            continue
        amounts = series.setdefault(row["model_slug"], [Decimal(0)] * days)
        amounts[index[row["day"]]] += row["total"]
        total += row["total"]
    ordered = dict(sorted(series.items(), key=lambda kv: -sum(kv[1])))
    return day_list, ordered, total


def spend_by_key(account, days: int = 30):
    """[(key label, credits charged, jobs)] over the last `days` days, most first."""
    first = timezone.now().date() - timedelta(days=days - 1)
    rows = (
        UsageDay.objects.filter(account=account, day__gte=first)
        .values("api_key__name", "api_key__prefix")
        .annotate(total=Sum("credits"), jobs=Sum("jobs"))
        .order_by("-total")
    )
    result = []
    for row in rows:
        if row["api_key__prefix"]:
            label = f"{row['api_key__name']} ({row['api_key__prefix']}…)"
        else:
            label = "web (no key)"
        result.append((label, row["total"], row["jobs"]))
    return result


def usage_rows(account):
    """Every (day, model, key prefix, jobs, credits) charged, newest day first, for the CSV."""
    return (
        UsageDay.objects.filter(account=account)
        .values("day", "model_slug", "api_key__prefix")
        .annotate(jobs=Sum("jobs"), total=Sum("credits"))
        .order_by("-day", "model_slug", "api_key__prefix")
    )


def rebuild_usage(account) -> None:
    """Recompute an account's rollup from its capture rows (rows loaded in bulk, e.g. a bench)."""
    rows = (
        LedgerEntry.objects.filter(account=account, kind="capture")
        .annotate(day=TruncDate("created"))
        .values("day", "job__model_slug", "job__api_key_id")
        .annotate(jobs=Count("id"), total=Sum("amount"))
        .order_by()
    )
    UsageDay.objects.filter(account=account).delete()
    UsageDay.objects.bulk_create(
        [
            UsageDay(
                account=account,
                day=row["day"],
                model_slug=row["job__model_slug"] or "(deleted job)",
                api_key_id=row["job__api_key_id"],
                jobs=row["jobs"],
                credits=-row["total"],
            )
            for row in rows
        ],
        batch_size=2000,
    )


def open_holds(user):
    from playground.models import Job

    return Job.objects.filter(user=user, hold_open=True).order_by("-created")
