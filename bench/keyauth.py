"""Cost of API key authentication: queries per authenticated request and µs per key lookup.

Runs against a fresh SQLite file (or DATABASE_URL's PostgreSQL, in a scratch database made by
Django's test runner machinery), side by side with a bare primary-key read of the same user, so
the ratio holds on a noisy machine.

    .venv/bin/python bench/keyauth.py [--n 5000]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")
os.environ.setdefault("PLAYGROUND_DATA_DIR", tempfile.mkdtemp(prefix="pg-keyauth-"))
os.environ.setdefault("PLAYGROUND_EMBEDDED_WORKER", "0")


def timed(fn, n: int, rounds: int = 5) -> float:
    """Median over rounds of µs per call."""
    per_call = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        per_call.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(per_call)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="lookups per round")
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connections

    connections["default"].settings_dict["TEST"]["NAME"] = "bench_keyauth"
    from django.db import connection
    from django.test.utils import (
        CaptureQueriesContext,
        setup_databases,
        setup_test_environment,
        teardown_databases,
    )

    setup_test_environment(debug=False)
    old = setup_databases(verbosity=0, interactive=False)
    try:
        from django.test import Client

        from accounts import keys
        from accounts.models import User

        user = User.objects.create_user(email="bench@example.com", tier="unlimited")
        _, raw = keys.create_key(user, "bench")
        keys.authenticate_key(raw)  # first use writes last_used

        with CaptureQueriesContext(connection) as auth_only:
            keys.authenticate_key(raw)
        client = Client()
        header = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
        client.get("/v1/requests", **header)
        with CaptureQueriesContext(connection) as request_queries:
            client.get("/v1/requests", **header)

        lookup = timed(lambda: keys.authenticate_key(raw), args.n)
        bare = timed(lambda: User.objects.get(pk=user.pk), args.n)
        bad = timed(lambda: keys.authenticate_key("pgk_" + "x" * 43), args.n)
        print(f"database: {connection.vendor}")
        print(
            f"queries per key authentication: {len(auth_only)} "
            "(plus at most 1 last-used write per key per minute)"
        )
        print(
            f"queries per authenticated GET /v1/requests: {len(request_queries)} "
            "(auth + the page of jobs)"
        )
        print(f"authenticate_key, valid key:   {lookup:8.1f} µs")
        print(f"authenticate_key, unknown key: {bad:8.1f} µs")
        print(f"bare User.objects.get(pk):     {bare:8.1f} µs")
        print(f"ratio valid lookup / bare read: {lookup / bare:.2f}")
    finally:
        teardown_databases(old, verbosity=0)


if __name__ == "__main__":
    main()
