"""Billing at scale on PostgreSQL: charges per second, and ledger-query latency at 1M ledger rows.

Builds a scratch database (Django's test-database machinery, name `bench_billing`), generates
one account's history with `generate_series` (1M ledger rows by default: hold, release and
capture for a third as many jobs over 90 days, 5 models, 3 API keys and the web), then times,
side by side in one run:

* hold+settle cycles per second (the submit hold and the finish settle, as the engine runs
  them: job INSERT, `ledger.hold`, conditional UPDATE, `ledger.settle`), 1 thread and 4 threads
  on the same account (they serialise on its row lock, by design);
* the balance read, the billing page's transaction list (page 1, a page 900K rows deep through
  the keyset cursor, a kind search, a text search), the 30-day chart aggregate, the per-key
  aggregate, the first bytes of the CSV export, and the whole /billing/ page;

and prints the PostgreSQL plans of the list, deep-page and chart queries.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/billing.py \
        [--rows 1000000] [--cycles 2000]
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")
os.environ.setdefault("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
os.environ.setdefault("PLAYGROUND_DATA_DIR", tempfile.mkdtemp(prefix="pg-bench-billing-"))
os.environ.setdefault("PLAYGROUND_EMBEDDED_WORKER", "0")

MODELS = ["trigram-pydoc", "llama-4-scout", "flux-schnell", "whisper-small", "embed-mini"]
SLUGS = ",".join(f"'{m}'" for m in MODELS)


def ms(fn, rounds: int = 15) -> tuple[float, float]:
    """(median, max) ms per call over `rounds` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


def generate(user, keys, rows: int) -> None:
    """`rows` ledger rows (a third each hold, release, capture) for rows/3 jobs, in SQL."""
    from django.db import connection

    from billing import ledger
    from playground.models import Job

    account = ledger.account_for(user)
    jobs = rows // 3
    exprs = {
        "request_id": "md5(i::text || clock_timestamp()::text)::uuid",
        "user_id": str(user.pk),
        "api_key_id": f"(ARRAY[{keys[0]}, {keys[1]}, {keys[2]}, NULL])[1 + mod(i, 4)]",
        "model_id": "NULL",
        "model_slug": f"(ARRAY[{SLUGS}])[1 + mod(i * 7, 5)]",
        "modality": "'text'",
        "params": "'{}'::jsonb",
        "status": "'success'",
        "progress": "1",
        "output": "'{}'::jsonb",
        "usage": "'{}'::jsonb",
        "error_code": "''",
        "error_message": "''",
        "hold_amount": "0.01",
        "hold_open": "false",
        "cost": "(mod(i, 97) + 1) / 10000.0",
        "created": f"now() - (({jobs} - i) * interval '90 days' / {jobs})",
        "started_at": "NULL",
        "finished_at": "NULL",
    }
    columns = [f.column for f in Job._meta.concrete_fields if f.column != "id"]
    missing = set(columns) - set(exprs)
    assert not missing, f"bench/billing.py: add SQL for new Job columns {missing}"
    with connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO playground_job ({', '.join(columns)}) "
            f"SELECT {', '.join(exprs[c] for c in columns)} FROM generate_series(1, %s) i",
            [jobs],
        )
        # Ids follow time, as real inserts do.
        cur.execute(
            "INSERT INTO billing_ledgerentry "
            "(account_id, kind, amount, job_id, reason, created) "
            "SELECT %s, k.kind, CASE k.kind WHEN 'hold' THEN -j.hold_amount "
            "WHEN 'release' THEN j.hold_amount ELSE -j.cost END, j.id, "
            "j.model_slug || CASE k.kind WHEN 'hold' THEN ': worst case held' "
            "WHEN 'release' THEN ': hold released' ELSE ': charged for usage' END, "
            "j.created + k.ord * interval '1 second' "
            "FROM playground_job j CROSS JOIN (VALUES ('hold', 0), ('release', 1), "
            "('capture', 2)) k(kind, ord) WHERE j.user_id = %s ORDER BY j.created, k.ord",
            [account.pk, user.pk],
        )
        cur.execute(
            "SELECT coalesce(sum(amount), 0) FROM billing_ledgerentry WHERE account_id = %s",
            [account.pk],
        )
        spent = cur.fetchone()[0]
    ledger.grant(user, -spent + Decimal(1000), reason="bench: opening grant")
    from billing import reports

    reports.rebuild_usage(account)
    with connection.cursor() as cur:
        cur.execute("ANALYZE playground_job")
        cur.execute("ANALYZE billing_ledgerentry")


def cycles_per_second(user, model, seconds_budget: int, threads: int, fsync=True) -> float:
    from django.db import connections, transaction
    from django.utils import timezone

    from billing import ledger
    from playground.models import Job

    done = []
    stop = time.monotonic() + seconds_budget

    def worker():
        count = 0
        if not fsync:
            from django.db import connection

            with connection.cursor() as cur:
                cur.execute("SET synchronous_commit TO off")
        try:
            while time.monotonic() < stop:
                with transaction.atomic():
                    job = Job.objects.create(
                        user=user,
                        model=model,
                        model_slug=model.slug,
                        modality="text",
                        hold_amount=Decimal("0.01"),
                        hold_open=True,
                    )
                    ledger.hold(user, job, Decimal("0.01"))
                with transaction.atomic():
                    Job.objects.filter(pk=job.pk, status=Job.PENDING).update(
                        status=Job.SUCCESS, cost=Decimal("0.0042"), finished_at=timezone.now()
                    )
                    ledger.settle(job, Decimal("0.0042"))
                count += 1
        finally:
            done.append(count)
            connections.close_all()

    start = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done) / (time.perf_counter() - start)


def commits_per_second(user, seconds_budget: int) -> float:
    """The floor: one single-row UPDATE committed, as often as possible."""
    from django.db import transaction
    from django.db.models import F

    from billing.models import CreditAccount

    count, stop = 0, time.monotonic() + seconds_budget
    start = time.perf_counter()
    while time.monotonic() < stop:
        with transaction.atomic():
            CreditAccount.objects.filter(user=user).update(held=F("held"))
        count += 1
    return count / (time.perf_counter() - start)


def explain(queryset) -> str:
    return queryset.explain(analyze=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="ledger rows to generate")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per charge run")
    parser.add_argument("--plans", action="store_true", help="print EXPLAIN ANALYZE plans")
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection, connections

    settings_dict = connections["default"].settings_dict
    if settings_dict["ENGINE"] != "django.db.backends.postgresql":
        sys.exit("bench/billing.py needs PostgreSQL (DATABASE_URL)")
    settings_dict.get("OPTIONS", {}).pop("pool", None)
    settings_dict["TEST"]["NAME"] = "bench_billing"
    from django.test.utils import setup_databases, setup_test_environment, teardown_databases

    setup_test_environment(debug=False)
    old = setup_databases(verbosity=0, interactive=False)
    try:
        from django.db.models import Sum
        from django.test import Client
        from django.utils.timezone import now as django_now

        from accounts import keys as key_rules
        from accounts.models import User
        from billing import ledger, reports
        from billing.models import LedgerEntry
        from playground.catalogue import get_model

        # A neighbour with a fifth as many rows, so plans must pick this account's rows out.
        neighbour = User.objects.create_user(email="other@example.com", password="bench-pass-1")
        generate(neighbour, [key_rules.create_key(neighbour, "k")[0].pk] * 3, args.rows // 5)
        user = User.objects.create_user(email="bench@example.com", password="bench-pass-1")
        keys = [key_rules.create_key(user, f"key {n}")[0].pk for n in range(3)]
        t0 = time.perf_counter()
        generate(user, keys, args.rows)
        account = ledger.account_for(user)
        total = LedgerEntry.objects.filter(account=account).count()
        print(f"database: PostgreSQL {connection.pg_version // 10000}")
        print(f"generated {total:,} ledger rows in {time.perf_counter() - t0:.1f} s")

        model = get_model("trigram-pydoc")
        other = User.objects.create_user(email="fresh@example.com", password="bench-pass-1")
        ledger.grant(other, Decimal(100000), reason="bench")
        one_commit = commits_per_second(other, args.seconds)
        one_fresh = cycles_per_second(other, model, args.seconds, 1)
        one_big = cycles_per_second(user, model, args.seconds, 1)
        four_big = cycles_per_second(user, model, args.seconds, 4)
        no_fsync = cycles_per_second(user, model, args.seconds, 1, fsync=False)
        print("\nhold+settle cycles per second (each: job insert, hold, finish update, settle)")
        print(f"  baseline: bare 1-row UPDATE + COMMIT {one_commit:5.0f}/s (two per cycle)")
        print(f"  1 thread,  fresh account:       {one_fresh:8.0f}/s")
        print(f"  1 thread,  1M-row account:      {one_big:8.0f}/s")
        print(f"  4 threads, same 1M-row account: {four_big:8.0f}/s")
        print(f"  1 thread,  synchronous_commit off: {no_fsync:5.0f}/s (the work without fsync)")

        # A cursor ~900K rows deep: the id of the row that OFFSET 900000 would start at.
        deep = (
            LedgerEntry.objects.filter(account=account)
            .order_by("-id")
            .values_list("id", flat=True)[min(900_000, total - 60)]
        )
        client = Client()
        client.force_login(user)
        from playground.models import Job

        job_id = str(Job.objects.filter(user=user).order_by("id")[1000].request_id)

        def csv_first_bytes():
            response = client.get("/billing/transactions.csv")
            stream = iter(response.streaming_content)
            next(stream), next(stream)  # the header and the first row
            response.close()

        checks = [
            ("balance (ledger.balances)", lambda: ledger.balances(user)),
            ("transactions page 1", lambda: reports.transactions_page(account)),
            ("transactions deep page (900K)", lambda: reports.transactions_page(account, "", deep)),
            ("search kind 'capture'", lambda: reports.transactions_page(account, "capture")),
            ("search text 'flux'", lambda: reports.transactions_page(account, "flux")),
            ("search a job's request_id", lambda: reports.transactions_page(account, job_id)),
            ("search rare kind 'purchase'", lambda: reports.transactions_page(account, "purchase")),
            ("30-day chart aggregate", lambda: reports.daily_usage(account)),
            ("30-day per-key aggregate", lambda: reports.spend_by_key(account)),
            ("CSV export: first bytes", csv_first_bytes),
            ("GET /billing/ (whole page)", lambda: client.get("/billing/")),
        ]
        print(f"\nquery latency at {total:,} rows (ms: median / max of 15)")
        for name, fn in checks:
            median, worst = ms(fn)
            print(f"  {name:34s} {median:8.2f} / {worst:8.2f}")

        if args.plans:
            rows = (
                reports.search(account)
                .select_related("job", "payment", "redeem_code", "operator")
                .order_by("-id")
            )
            print("\nplan: transactions page 1\n" + explain(rows[:51]))
            print("\nplan: deep page\n" + explain(rows.filter(id__lt=deep)[:51]))
            text = reports.search(account, "flux").order_by("-id")[:51]
            print("\nplan: text search\n" + explain(text))
            rare = reports.search(account, "purchase").order_by("-id")[:51]
            print("\nplan: rare kind search\n" + explain(rare))
            from billing.models import UsageDay

            first = django_now().date() - timedelta(days=29)
            chart = (
                UsageDay.objects.filter(account=account, day__gte=first)
                .values("day", "model_slug")
                .annotate(total=Sum("credits"))
                .order_by()
            )
            print("\nplan: 30-day chart (rollup)\n" + explain(chart))
            csv_chunk = rows.filter(id__lt=deep).values_list("id", "amount")[:2000]
            print("\nplan: CSV chunk\n" + explain(csv_chunk))
    finally:
        connections.close_all()
        teardown_databases(old, verbosity=0)


if __name__ == "__main__":
    main()
