"""What the billing page and its CSV exports read: all aggregates are computed in SQL."""

import uuid
from datetime import UTC, datetime, time, timedelta

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from .models import LedgerEntry

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
        return rows.filter(Q(job__request_id=ref) | Q(payment__public_id=ref))
    return rows.filter(
        Q(reason__icontains=q) | Q(job__model_slug__icontains=q) | Q(redeem_code__code=q.upper())
    )


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
    """Credits charged per UTC day and model over the last `days` days.

    Returns (day list oldest first, {model: [amount per day]}, total).
    """
    today = (now or timezone.now()).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, time.min, tzinfo=UTC)
    rows = (
        LedgerEntry.objects.filter(account=account, kind="capture", created__gte=start)
        .annotate(day=TruncDate("created"))
        .values("day", "job__model_slug")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    day_list = [first + timedelta(days=i) for i in range(days)]
    index = {d: i for i, d in enumerate(day_list)}
    series: dict[str, list] = {}
    total = 0
    for row in rows:
        if row["day"] not in index:
            continue
        model = row["job__model_slug"] or "(deleted job)"
        amounts = series.setdefault(model, [0] * days)
        amounts[index[row["day"]]] += -row["total"]
        total += -row["total"]
    # Biggest spenders first, so colours and the legend are stable for the top models.
    ordered = dict(sorted(series.items(), key=lambda kv: -sum(kv[1])))
    return day_list, ordered, total


def spend_by_key(account, days: int = 30):
    """[(key label, credits charged)] over the last `days` days, most first; web jobs as 'web'."""
    since = timezone.now() - timedelta(days=days)
    rows = (
        LedgerEntry.objects.filter(account=account, kind="capture", created__gte=since)
        .values("job__api_key__name", "job__api_key__prefix")
        .annotate(total=Sum("amount"), jobs=Count("id"))
        .order_by("total")
    )
    result = []
    for row in rows:
        if row["job__api_key__prefix"]:
            label = f"{row['job__api_key__name']} ({row['job__api_key__prefix']}…)"
        else:
            label = "web (no key)"
        result.append((label, -row["total"], row["jobs"]))
    return result


def usage_rows(account):
    """Every (day, model, key, jobs, credits) of charges, newest day first, for the CSV."""
    return (
        LedgerEntry.objects.filter(account=account, kind="capture")
        .annotate(day=TruncDate("created"))
        .values("day", "job__model_slug", "job__api_key__prefix")
        .annotate(jobs=Count("id"), total=Sum("amount"))
        .order_by("-day", "job__model_slug", "job__api_key__prefix")
    )


def open_holds(user):
    from playground.models import Job

    return Job.objects.filter(user=user, hold_open=True).order_by("-created")
