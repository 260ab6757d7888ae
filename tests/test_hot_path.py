"""The job hot path's shortcuts (issue #6): raw statements, request threads, SQLite's queue,
the model cache. Each must behave exactly like what it replaced."""

import asyncio
import tempfile
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from asgiref.testing import ApplicationCommunicator
from django.core.signals import request_started
from django.db import OperationalError, connections, transaction
from django.utils import timezone

from billing.models import CreditAccount, LedgerEntry
from playground import catalogue, sql
from playground.middleware import ApiHandler
from playground.models import AIModel, Job


@pytest.mark.django_db
def test_raw_insert_and_update_store_what_the_orm_stores(alice):
    started = timezone.now()
    job = Job(
        user=alice,
        model_slug="m",
        modality="text",
        params={"prompt": "héllo", "nested": [1, {"a": None}]},
        hold_amount=Decimal("0.123456"),
        hold_open=True,
        status=Job.RUNNING,
        started_at=started,
    )
    sql.insert([job])
    assert job.pk is not None and not job._state.adding
    stored = Job.objects.get(pk=job.pk)
    assert stored.request_id == job.request_id and isinstance(stored.request_id, uuid.UUID)
    assert stored.params == {"prompt": "héllo", "nested": [1, {"a": None}]}
    assert stored.hold_amount == Decimal("0.123456") and stored.hold_open is True
    assert stored.started_at == started and stored.created == job.created

    # A condition that does not hold changes nothing; one that holds changes the row.
    assert sql.update(Job, job.pk, {"status": Job.SUCCESS}, where={"status": Job.PENDING}) == 0
    assert Job.objects.get(pk=job.pk).status == Job.RUNNING
    done = {"status": Job.SUCCESS, "output": {"text": "ok"}, "cost": Decimal("0.000001")}
    assert sql.update(Job, job.pk, done, where={"status": Job.RUNNING, "hold_open": True}) == 1
    stored = Job.objects.get(pk=job.pk)
    assert (stored.status, stored.output, stored.cost) == (
        Job.SUCCESS,
        {"text": "ok"},
        Decimal("0.000001"),
    )


@pytest.mark.django_db
def test_raw_insert_of_several_rows_gives_each_its_own_key(alice):
    account, _ = CreditAccount.objects.get_or_create(user=alice)
    entries = [
        LedgerEntry(account=account, kind="grant", amount=Decimal(n), reason=f"r{n}")
        for n in (1, 2, 3)
    ]
    sql.insert(entries)
    assert len({e.pk for e in entries}) == 3
    for entry in entries:
        assert LedgerEntry.objects.get(pk=entry.pk).reason == entry.reason


@pytest.mark.django_db
def test_raw_fetch_gives_the_instances_a_queryset_gives(alice, alice_key):
    from accounts.models import ApiKey, User

    CreditAccount.objects.get_or_create(user=alice)
    job = Job.objects.create(
        user=alice,
        model_slug="m",
        modality="text",
        params={"prompt": "x"},
        output={"text": "y"},
        hold_amount=Decimal("1.5"),
        started_at=timezone.now(),
    )
    for model, where, params, queryset in [
        (Job, "WHERE request_id = %s", [job.request_id.hex], Job.objects.filter(pk=job.pk)),
        (User, "WHERE id = %s", [alice.pk], User.objects.filter(pk=alice.pk)),
        (ApiKey, "WHERE user_id = %s", [alice.pk], ApiKey.objects.filter(user=alice)),
        (CreditAccount, "WHERE user_id = %s", [alice.pk], CreditAccount.objects.filter(user=alice)),
    ]:
        if model is Job and connections["default"].vendor == "postgresql":
            params = [job.request_id]
        fetched, expected = sql.fetch(model, where, params), list(queryset)
        assert len(fetched) == len(expected) == 1
        for field in model._meta.concrete_fields:
            a, b = getattr(fetched[0], field.attname), getattr(expected[0], field.attname)
            assert a == b and type(a) is type(b), (model, field.name, a, b)
    assert sql.fetch(Job, "WHERE id = %s", [-1]) == []


def _sqlite_alias(engine: str, busy_timeout: float) -> str:
    """A second database, a SQLite file of its own, on `engine`."""
    alias = f"queue_{uuid.uuid4().hex[:8]}"
    path = Path(tempfile.mkdtemp()) / "db.sqlite3"
    connections.settings[alias] = {
        **connections.settings["default"],
        "ENGINE": engine,
        "NAME": str(path),
        "CONN_MAX_AGE": 0,
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": busy_timeout},
        "TEST": {},
    }
    with connections[alias].cursor() as cursor:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("CREATE TABLE counter (n INTEGER)")
        cursor.execute("INSERT INTO counter VALUES (0)")
    connections[alias].close()
    return alias


def _hammer(alias: str, threads: int = 12, each: int = 15) -> tuple[int, list]:
    errors = []

    def work():
        try:
            for _ in range(each):
                with transaction.atomic(using=alias):
                    with connections[alias].cursor() as cursor:
                        cursor.execute("UPDATE counter SET n = n + 1")
                        time.sleep(0.002)  # hold the write lock a moment: writers overlap
        except OperationalError as exc:
            errors.append(exc)
        finally:
            connections[alias].close()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT n FROM counter")
        total = cursor.fetchone()[0]
    connections[alias].close()
    return total, errors


@pytest.fixture
def own_databases(django_db_blocker):
    """These tests open SQLite files of their own, outside the test database."""
    with django_db_blocker.unblock():
        yield


def test_sqlite_writers_of_one_process_queue_instead_of_failing(own_databases):
    # A busy timeout far shorter than the queue: SQLite's own retries give up ("database is
    # locked"); writers queued on the process's lock all get their turn.
    plain = _sqlite_alias("django.db.backends.sqlite3", busy_timeout=0.001)
    total, errors = _hammer(plain)
    assert errors and total < 12 * 15  # the failure the queue prevents
    queued = _sqlite_alias("playground.sqlite", busy_timeout=0.001)
    # The queue waits as long as the busy timeout allows SQLite itself: long enough here.
    connections.settings[queued]["OPTIONS"]["timeout"] = 20
    total, errors = _hammer(queued)
    assert errors == [] and total == 12 * 15


def test_sqlite_write_lock_is_released_when_a_transaction_fails(own_databases):
    alias = _sqlite_alias("playground.sqlite", busy_timeout=2)
    with pytest.raises(RuntimeError):
        with transaction.atomic(using=alias):
            connections[alias].cursor().execute("UPDATE counter SET n = n + 1")
            raise RuntimeError("the transaction fails")
    finished = threading.Event()

    def writer():
        with transaction.atomic(using=alias):
            connections[alias].cursor().execute("UPDATE counter SET n = n + 5")
        connections[alias].close()
        finished.set()

    threading.Thread(target=writer).start()
    assert finished.wait(5), "the failed transaction kept the write lock"
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT n FROM counter")
        assert cursor.fetchone()[0] == 5
    connections[alias].close()


def test_sqlite_connections_stay_open_only_on_marked_threads_and_read_fresh_rows(own_databases):
    from django.db import close_old_connections

    from playground.sqlite.base import keep_connections_open

    alias = _sqlite_alias("playground.sqlite", busy_timeout=2)
    seen = {}

    def request_thread(keep: bool):
        if keep:
            keep_connections_open()
        conn = connections[alias]
        reads = []
        for n in (7, 8):
            with conn.cursor() as cursor:
                cursor.execute("SELECT n FROM counter")
                cursor.fetchall()
            raw = conn.connection
            close_old_connections()  # the end of a request
            # Another connection (the worker's, another thread's) commits meanwhile.
            writer = threading.Thread(target=_set_counter, args=(alias, n))
            writer.start()
            writer.join()
            with conn.cursor() as cursor:
                cursor.execute("SELECT n FROM counter")
                reads.append(cursor.fetchone()[0])
            seen.setdefault(keep, []).append(conn.connection is raw)
        seen[keep, "reads"] = reads
        conn.close()

    for keep in (True, False):
        thread = threading.Thread(target=request_thread, args=(keep,))
        thread.start()
        thread.join()
    assert seen[True] == [True, True]  # one connection for every request of the thread
    assert seen[False] == [False, False]  # closed at the end of each request, as before
    assert seen[True, "reads"] == seen[False, "reads"] == [7, 8]  # never a stale snapshot


def _set_counter(alias: str, n: int) -> None:
    with transaction.atomic(using=alias):
        connections[alias].cursor().execute("UPDATE counter SET n = %s", [n])
    connections[alias].close()


async def _get(app, path: str) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(5)
    while (await communicator.receive_output(5)).get("more_body"):
        pass
    await communicator.wait(5)
    return start["status"]


@pytest.mark.django_db(transaction=True)
def test_api_requests_reuse_the_threads_of_finished_requests():
    threads = []

    def record(**kwargs):
        threads.append(threading.get_ident())

    request_started.connect(record)
    try:
        app = ApiHandler()

        async def scenario():
            for _ in range(3):  # one after another: one thread for all
                assert await _get(app, "/v1/models") == 200
            # Three at once: each needs a thread; afterwards all three are kept.
            statuses = await asyncio.gather(*(_get(app, "/v1/models") for _ in range(3)))
            assert statuses == [200, 200, 200]

        asyncio.run(scenario())
    finally:
        request_started.disconnect(record)
    assert len(set(threads[:3])) == 1
    assert len(set(threads[3:])) == 3 and threads[0] in threads[3:]


@pytest.mark.django_db
def test_a_model_change_here_applies_at_once_and_from_elsewhere_within_the_ttl(settings):
    settings.PLAYGROUND_MODEL_CACHE_SECONDS = 0.3
    model = catalogue.get_model("trigram-pydoc")
    assert catalogue.get_model("trigram-pydoc") is model  # served from memory

    model.per_request = Decimal("0.5")
    model.save()  # this process: the next read sees it
    assert catalogue.get_model("trigram-pydoc").per_request == Decimal("0.5")

    # Another process (manage.py, another web process) changes the row: no signal here.
    AIModel.objects.filter(slug="trigram-pydoc").update(enabled=False)
    assert catalogue.get_model("trigram-pydoc") is not None
    time.sleep(0.35)
    assert catalogue.get_model("trigram-pydoc") is None
