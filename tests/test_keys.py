"""API keys (CONTRACT §2, §3 profile, §6 errors, §7 close codes): format, storage, states, caps,
rotation, expiry, allowlists, last use, the audit log, the keys pages and the admin."""

import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from allauth.account.internal.flows.login import AUTHENTICATION_METHODS_SESSION_KEY
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import keys
from accounts.models import ApiKey, KeyEvent, User
from billing import ledger
from playground.asgi import application
from playground.engine import registry
from playground.models import Job
from tests.conftest import require_postgres, sudo_login

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "trigram-pydoc"
SECRET_RE = re.compile(r"pgk_[A-Za-z0-9_-]{20,}")
DECIMAL_RE = re.compile(r"^\d+(\.\d+)?$")


@pytest.fixture(autouse=True)
async def _close_thread_connections():
    """sync_to_async runs ORM calls in a helper thread; its connection must not outlive the test."""
    yield
    await sync_to_async(connections.close_all)()


# --- helpers -------------------------------------------------------------------------------------


def submit(api, key, **body):
    payload = {"model": MODEL, "prompt": "The class", "max_tokens": 4, **body}
    return api.post("/v1/generate-text", payload, key=key)


def error(response):
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "code", "param"}, body
    return body["error"]


def key_of(raw) -> ApiKey:
    return ApiKey.objects.get(prefix=raw[:12])


def new_key_form(**fields):
    return {"name": "laptop", "tier": "free", "form_id": str(uuid.uuid4()), **fields}


def rotate_form(grace: str) -> dict:
    return {"grace": grace, "form_id": str(uuid.uuid4())}


def secret_in(html: str) -> str:
    return SECRET_RE.search(html).group(0)


def snapshot(key: ApiKey) -> dict:
    """Everything stored about a key, for 'nothing changed' assertions."""
    row = ApiKey.objects.filter(pk=key.pk).values().get()
    return {"row": row, "events": list(KeyEvent.objects.filter(key=key).values_list("id"))}


def run_a_job(api, raw, **body) -> Job:
    response = submit(api, raw, **body)
    assert response.status_code == 200, response.content
    job = Job.objects.get(request_id=response.json()["request_id"])
    assert job.status == "success"  # the engine runs eagerly in tests
    return job


def old_job(key: ApiKey, cost: str, created) -> Job:
    """A finished job of the key's, charged `cost`, created at `created` (history, via the ORM)."""
    return Job.objects.create(
        user=key.user,
        api_key=key,
        model_slug=MODEL,
        modality="text",
        status=Job.SUCCESS,
        progress=1,
        hold_amount=Decimal(cost),
        hold_open=False,
        cost=Decimal(cost),
        created=created,
        finished_at=created,
    )


# --- format and storage --------------------------------------------------------------------------


def test_key_format_prefix_and_randomness(alice):
    raws = [keys.create_key(alice, f"k{i}")[1] for i in range(40)]
    assert len(set(raws)) == len(raws)
    alphabet = set()
    for raw in raws:
        assert raw.startswith("pgk_")
        random_part = raw[len("pgk_") :]
        # URL-safe base64: 6 bits a character; >= 192 bits means >= 32 characters.
        assert re.fullmatch(r"[A-Za-z0-9_-]+", random_part)
        assert len(random_part) * 6 >= 192
        alphabet |= set(random_part)
    # 40 keys of >= 32 random characters use (nearly) the whole 64-character alphabet.
    assert len(alphabet) >= 60
    # The listed prefix (first 12 characters) tells keys apart, in practice.
    assert len({raw[:12] for raw in raws}) == len(raws)


def test_key_is_stored_only_as_a_keyed_hash(client, alice):
    sudo_login(client, alice)
    raw = secret_in(client.post("/keys/", new_key_form(name="stored")).content.decode())
    key = key_of(raw)
    expected = hmac.new(settings.API_KEY_SECRET.encode(), raw.encode(), hashlib.sha256).hexdigest()
    assert key.hashed == expected
    assert key.hashed != hashlib.sha256(raw.encode()).hexdigest()  # keyed, not a plain digest
    assert key.prefix == raw[:12]
    # No column of any table holds the secret, or its part after the listed prefix.
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                text = " ".join(str(v) for v in row)
                assert raw not in text, table
                assert raw[12:] not in text, table
    # Nor does the session (its data is encoded, so look inside).
    from django.contrib.sessions.models import Session

    assert Session.objects.exists()
    for session in Session.objects.all():
        assert raw[12:] not in json.dumps(session.get_decoded())


def test_changing_the_key_secret_setting_invalidates_keys(api, alice_key, settings):
    assert api.get("/v1/requests", key=alice_key).status_code == 200
    settings.API_KEY_SECRET = "a-different-api-key-secret"
    response = api.get("/v1/requests", key=alice_key)
    assert response.status_code == 401
    assert error(response)["code"] == "invalid_api_key"
    # A key created under the new secret works under it.
    _, fresh = keys.create_key(User.objects.get(), "new")
    assert api.get("/v1/requests", key=fresh).status_code == 200


def test_the_key_secret_comes_from_its_own_environment_variable():
    import os
    import subprocess
    import sys

    code = "from playground import settings as s; print(s.API_KEY_SECRET)"
    env = {**os.environ, "SECRET_KEY": "session-secret", "PLAYGROUND_API_KEY_SECRET": "key-secret"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "key-secret", out.stderr
    # Rotating SECRET_KEY (sessions) leaves the keys' secret, and so every key, alone.
    env["SECRET_KEY"] = "rotated-session-secret"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "key-secret", out.stderr


# --- key states on the API and on websockets -----------------------------------------------------


def test_invalid_revoked_and_expired_keys_are_401_even_on_public_endpoints(api, alice_key):
    unknown = "pgk_" + "A" * 43
    truncated = alice_key[:-1]
    for raw in (unknown, truncated, "not-a-key"):
        for path in ("/v1/requests", "/v1/models", f"/v1/models/{MODEL}", "/v1/user/profile"):
            response = api.get(path, key=raw)
            assert response.status_code == 401, (raw, path)
            assert error(response)["code"] == "invalid_api_key"
            assert raw not in response.content.decode()
    key = key_of(alice_key)
    keys.revoke(key)
    for path in ("/v1/requests", "/v1/models"):
        assert api.get(path, key=alice_key).status_code == 401
    assert submit(api, alice_key).status_code == 401

    _, expiring = keys.create_key(key.user, "expiring")
    ApiKey.objects.filter(prefix=expiring[:12]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    for path in ("/v1/requests", "/v1/models"):
        response = api.get(path, key=expiring)
        assert response.status_code == 401
        assert error(response)["code"] == "invalid_api_key"
    assert submit(api, expiring).status_code == 401
    assert not Job.objects.exists()


def test_tiny_cap_refuses_the_submit_with_402_and_creates_nothing(api, alice_key):
    key = key_of(alice_key)
    keys.update(key, spend_cap=Decimal("0.000001"), spend_cap_period="")
    available = ledger.balances(key.user)[1]
    response = submit(api, alice_key)
    assert response.status_code == 402
    assert error(response)["code"] == "key_spend_cap_reached"
    assert not Job.objects.exists()
    assert ledger.balances(key.user)[1] == available
    # The cap still has room (0.000001), so reads go on working.
    assert api.get("/v1/requests", key=alice_key).status_code == 200


def test_a_hold_that_fits_the_cap_exactly_is_accepted(api, alice_key):
    key = key_of(alice_key)
    hold = Decimal("0.00042")  # 2 prompt tokens at 0.01/1K + 20 at 0.02/1K
    keys.update(key, spend_cap=hold, spend_cap_period="")
    assert ledger.key_cap_remaining(key) == hold  # nothing spent yet
    response = submit(api, alice_key, max_tokens=20)
    assert response.status_code == 200, response.content  # today: 402, "leaves 0"
    job = Job.objects.get()
    assert job.hold_amount == hold and ledger.key_spend(key) == hold
    assert submit(api, alice_key, max_tokens=1).status_code == 402


def test_used_up_cap_refuses_submits_but_not_reads_with_402(api, alice_key):
    key = key_of(alice_key)
    keys.update(key, spend_cap=Decimal("0.001"), spend_cap_period="")
    refused = None
    for _ in range(20):  # jobs of up to 0.00042 each, until the cap has no room
        response = submit(api, alice_key, max_tokens=20)
        if response.status_code != 200:
            refused = response
            break
    assert refused is not None and refused.status_code == 402
    assert error(refused)["code"] == "key_spend_cap_reached"
    spent = ledger.key_spend(key)
    assert 0 < spent <= Decimal("0.001")
    # Cap exactly used up: submits are refused, reads still work (money is only taken at submit).
    keys.update(key, spend_cap=spent)
    response = submit(api, alice_key)
    assert response.status_code == 402
    assert error(response)["code"] == "key_spend_cap_reached"
    for path in ("/v1/requests", "/v1/models", "/v1/user/profile"):
        assert api.get(path, key=alice_key).status_code == 200, path


def test_a_hold_that_fills_the_cap_does_not_lock_the_key_out_of_its_job(
    api, alice_key, alice_with_credits, monkeypatch
):
    monkeypatch.setattr(registry, "enqueue", lambda job: None)  # the job stays pending
    key = key_of(alice_key)
    keys.update(key, spend_cap=Decimal("0.00042"), spend_cap_period="")  # exactly one hold
    rid = submit(api, alice_key, max_tokens=20).json()["request_id"]
    assert ledger.key_cap_remaining(key) == 0
    assert error(submit(api, alice_key))["code"] == "key_spend_cap_reached"
    poll = api.get(f"/v1/requests/{rid}", key=alice_key)
    assert poll.status_code == 200 and poll.json()["status"] == "pending"
    assert api.post("/v1/generate-text", {"request_id": rid}, key=alice_key).status_code == 200
    profile = api.get("/v1/user/profile", key=alice_key)
    assert profile.status_code == 200 and profile.json()["key"]["spend_cap_remaining"] == "0"
    canceled = api.post(f"/v1/requests/{rid}/cancel", {}, key=alice_key)
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert ledger.key_cap_remaining(key) == Decimal("0.00042")
    assert submit(api, alice_key, max_tokens=20).status_code == 200


async def _ws_close(request_id, raw):
    comm = WebsocketCommunicator(
        application,
        f"/ws/jobs/{request_id}/",
        headers=[(b"authorization", f"Bearer {raw}".encode())],
    )
    await comm.connect()
    messages = []
    while True:
        output = await comm.receive_output(5)
        if output["type"] == "websocket.close":
            return messages, output.get("code")
        messages.append(json.loads(output["text"]))


async def test_websocket_accepts_a_key_whose_cap_is_used_up(api, alice_key):
    job = await sync_to_async(run_a_job)(api, alice_key)
    await ApiKey.objects.filter(prefix=alice_key[:12]).aupdate(spend_cap=job.cost)
    assert await _ws_close(job.request_id, alice_key) == (
        [{"type": "snapshot", "job": await sync_to_async(_doc)(job)}],
        1000,
    )


@pytest.mark.parametrize("state", ["revoked", "expired"])
async def test_websocket_refuses_unusable_keys_with_4401(api, alice_key, state):
    job = await sync_to_async(run_a_job)(api, alice_key)
    assert await _ws_close(job.request_id, alice_key) == (
        [{"type": "snapshot", "job": await sync_to_async(_doc)(job)}],
        1000,
    )
    key = await sync_to_async(key_of)(alice_key)
    if state == "revoked":
        await sync_to_async(keys.revoke)(key)
    elif state == "expired":
        await ApiKey.objects.filter(pk=key.pk).aupdate(
            expires_at=timezone.now() - timedelta(minutes=1)
        )
    assert await _ws_close(job.request_id, alice_key) == ([], 4401)


async def test_websocket_bad_key_is_refused_even_with_a_valid_session(
    api, client, alice_with_credits, alice_key
):
    job = await sync_to_async(run_a_job)(api, alice_key)
    await sync_to_async(client.force_login)(alice_with_credits)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    key = await sync_to_async(key_of)(alice_key)
    await sync_to_async(keys.revoke)(key)
    for raw in (alice_key, "pgk_" + "B" * 43):
        comm = WebsocketCommunicator(
            application,
            f"/ws/jobs/{job.request_id}/",
            headers=[(b"authorization", f"Bearer {raw}".encode()), (b"cookie", cookie)],
        )
        await comm.connect()
        output = await comm.receive_output(5)
        assert (output["type"], output.get("code")) == ("websocket.close", 4401)


def _doc(job):
    from playground.jobs import status_document

    job.refresh_from_db()
    return json.loads(json.dumps(status_document(job)))


# --- spend caps ----------------------------------------------------------------------------------


def profile_key(api, raw) -> dict:
    response = api.get("/v1/user/profile", key=raw)
    assert response.status_code == 200, response.content
    return response.json()["key"]


def test_daily_cap_counts_only_todays_spend(api, alice_key):
    key = key_of(alice_key)
    keys.update(key, spend_cap=Decimal("0.01"), spend_cap_period="daily")
    old_job(key, "5", timezone.now() - timedelta(days=2))
    doc = profile_key(api, alice_key)
    assert doc["spend"] == "5"  # what the key ever spent
    assert doc["spend_cap_remaining"] == "0.01"  # what today's window leaves
    job = run_a_job(api, alice_key)
    doc = profile_key(api, alice_key)
    assert DECIMAL_RE.match(doc["spend"]) and DECIMAL_RE.match(doc["spend_cap_remaining"])
    assert Decimal(doc["spend"]) == Decimal("5") + job.cost
    assert Decimal(doc["spend_cap_remaining"]) == Decimal("0.01") - job.cost
    # The same history against a lifetime cap: used up; the profile still answers, submits don't.
    keys.update(key, spend_cap=Decimal("0.01"), spend_cap_period="")
    assert profile_key(api, alice_key)["spend_cap_remaining"] == "0"
    assert submit(api, alice_key).status_code == 402


def test_profile_without_cap_reports_null_remaining(api, alice_key):
    job = run_a_job(api, alice_key)
    doc = profile_key(api, alice_key)
    assert doc["spend_cap_remaining"] is None
    assert DECIMAL_RE.match(doc["spend"]) and Decimal(doc["spend"]) == job.cost
    assert doc["prefix"] == alice_key[:12] and doc["name"] == "test"
    assert isinstance(doc["spend"], str)


def test_period_start_boundaries():
    wednesday = datetime(2026, 3, 4, 15, 30, 12, 5, tzinfo=UTC)
    assert ledger.period_start("daily", wednesday) == datetime(2026, 3, 4, tzinfo=UTC)
    assert ledger.period_start("weekly", wednesday) == datetime(2026, 3, 2, tzinfo=UTC)  # Monday
    assert ledger.period_start("monthly", wednesday) == datetime(2026, 3, 1, tzinfo=UTC)
    assert ledger.period_start("", wednesday) is None
    monday_midnight = datetime(2026, 3, 2, tzinfo=UTC)
    assert ledger.period_start("weekly", monday_midnight) == monday_midnight
    sunday_late = datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=UTC)
    assert ledger.period_start("weekly", sunday_late) == datetime(2026, 2, 23, tzinfo=UTC)
    assert ledger.period_start("monthly", sunday_late) == datetime(2026, 3, 1, tzinfo=UTC)
    new_year = datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert ledger.period_start("weekly", new_year) == datetime(2026, 12, 28, tzinfo=UTC)
    assert ledger.period_start("monthly", new_year) == datetime(2027, 1, 1, tzinfo=UTC)
    leap = datetime(2028, 2, 29, 12, tzinfo=UTC)
    assert ledger.period_start("monthly", leap) == datetime(2028, 2, 1, tzinfo=UTC)


@pytest.mark.parametrize("period", ["weekly", "monthly"])
def test_weekly_and_monthly_caps_count_from_the_window_start(api, alice_key, period):
    key = key_of(alice_key)
    keys.update(key, spend_cap=Decimal("10"), spend_cap_period=period)
    start = ledger.period_start(period)
    old_job(key, "3", start - timedelta(microseconds=1))  # the last moment of the last window
    assert profile_key(api, alice_key)["spend_cap_remaining"] == "10"
    old_job(key, "2", start)  # the first moment of this one
    doc = profile_key(api, alice_key)
    assert doc == {**doc, "spend": "5", "spend_cap_remaining": "8"}


def test_cap_reached_event_is_written_once_per_window(api, alice_key):
    key = key_of(alice_key)
    keys.update(key, spend_cap=Decimal("0.000001"), spend_cap_period="daily")
    for _ in range(3):
        assert submit(api, alice_key).status_code == 402
    events = KeyEvent.objects.filter(key=key, kind="cap_reached")
    assert events.count() == 1
    # Used up entirely: reads are not refused and log nothing; refused submits log no more.
    keys.update(key, spend_cap=Decimal("0"))
    for _ in range(2):
        assert api.get("/v1/requests", key=alice_key).status_code == 200
        assert submit(api, alice_key).status_code == 402
    assert events.count() == 1
    # Yesterday's note does not cover today's window.
    events.update(created=timezone.now() - timedelta(days=1, minutes=1))
    assert submit(api, alice_key).status_code == 402
    assert submit(api, alice_key).status_code == 402
    assert events.count() == 2


@pytest.mark.services
def test_concurrent_submits_never_exceed_the_cap(alice_key, monkeypatch):
    require_postgres()
    monkeypatch.setattr(registry, "enqueue", lambda job: None)  # holds stay open
    key = key_of(alice_key)
    hold = Decimal("0.00042")  # 2 prompt tokens at 0.01/1K + 20 at 0.02/1K
    keys.update(key, spend_cap=hold * 3 + hold / 2, spend_cap_period="")
    statuses, codes, errors = [], [], []
    barrier = threading.Barrier(12)

    def worker():
        try:
            client = Client()
            body = json.dumps({"model": MODEL, "prompt": "The class", "max_tokens": 20})
            barrier.wait(10)
            response = client.post(
                "/v1/generate-text",
                body,
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {alice_key}",
            )
            statuses.append(response.status_code)
            if response.status_code != 200:
                codes.append(response.json()["error"]["code"])
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    accepted = statuses.count(200)
    assert 0 < accepted <= 3  # 3 holds fit the cap; a 4th never does
    assert set(codes) == {"key_spend_cap_reached"}
    assert Job.objects.filter(api_key=key).count() == accepted
    assert set(Job.objects.values_list("hold_amount", flat=True)) == {hold}
    assert ledger.key_spend(key) == accepted * hold <= key.spend_cap
    assert KeyEvent.objects.filter(key=key, kind="cap_reached").exists()


@pytest.mark.services
def test_simultaneous_refusals_log_cap_reached_once(alice_key):
    require_postgres()
    key = key_of(alice_key)
    # Unlimited tier: 128 refused submits must not be cut short by the rate limit.
    keys.update(key, spend_cap=Decimal("0"), spend_cap_period="daily", tier="unlimited")
    events = KeyEvent.objects.filter(key=key, kind="cap_reached")
    counts = []
    for _ in range(8):  # bursts of refusals, each in a fresh cap window
        statuses, errors = [], []
        barrier = threading.Barrier(16)

        def worker(statuses=statuses, errors=errors, barrier=barrier):
            try:
                client = Client()
                barrier.wait(10)
                response = client.post(
                    "/v1/generate-text",
                    {"model": MODEL, "prompt": "The class", "max_tokens": 4},
                    content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {alice_key}",
                )
                statuses.append(response.status_code)
            except Exception as exc:  # surfaced below
                errors.append(exc)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert statuses == [402] * 16
        today = events.filter(created__gte=ledger.period_start("daily"))
        counts.append(today.count())
        today.update(created=timezone.now() - timedelta(days=1, minutes=1))  # a new window
    assert counts == [1] * 8


# --- rotation ------------------------------------------------------------------------------------


def rotate_on_page(client, key, grace):
    response = client.post(f"/keys/{key.public_id}/rotate", rotate_form(grace))
    assert response.status_code == 200, response.status_code
    assert response["Cache-Control"] == "no-store"
    return secret_in(response.content.decode())


def test_rotate_without_grace_stops_the_old_secret_at_once(client, api, alice_key):
    key = key_of(alice_key)
    sudo_login(client, key.user)
    new = rotate_on_page(client, key, "0")
    assert new != alice_key and new.startswith("pgk_")
    assert api.get("/v1/requests", key=alice_key).status_code == 401
    assert api.get("/v1/requests", key=new).status_code == 200
    event = KeyEvent.objects.get(key=key, kind="rotated")
    assert event.key_prefix == new[:12]


def test_rotate_with_grace_keeps_both_until_the_window_ends(client, api, alice_key):
    key = key_of(alice_key)
    sudo_login(client, key.user)
    before = timezone.now()
    new = rotate_on_page(client, key, "1h")
    key.refresh_from_db()
    assert before + timedelta(minutes=59) < key.previous_valid_until
    assert key.previous_valid_until <= timezone.now() + timedelta(hours=1)
    assert api.get("/v1/requests", key=alice_key).status_code == 200
    assert api.get("/v1/requests", key=new).status_code == 200
    assert "valid until" in KeyEvent.objects.get(key=key, kind="rotated").detail
    ApiKey.objects.filter(pk=key.pk).update(
        previous_valid_until=timezone.now() - timedelta(seconds=1)
    )
    assert api.get("/v1/requests", key=alice_key).status_code == 401
    assert api.get("/v1/requests", key=new).status_code == 200


@pytest.mark.parametrize("grace", ["0", "1h"])
def test_rotation_keeps_settings_and_history(client, api, alice_with_credits, grace):
    expires = timezone.now() + timedelta(days=30)
    key, raw = keys.create_key(
        alice_with_credits,
        "ci",
        tier="free",
        expires_at=expires,
        spend_cap=Decimal("5"),
        spend_cap_period="weekly",
        allowed_models=[MODEL],
    )
    job = run_a_job(api, raw)
    sudo_login(client, alice_with_credits)
    new = rotate_on_page(client, key, grace)
    after = ApiKey.objects.get(pk=key.pk)
    assert ApiKey.objects.count() == 1
    assert (after.name, after.tier, after.expires_at) == ("ci", "free", expires)
    assert (after.spend_cap, after.spend_cap_period, after.allowed_models) == (
        Decimal("5"),
        "weekly",
        [MODEL],
    )
    assert list(after.jobs.all()) == [job]
    assert list(after.events.order_by("created", "id").values_list("kind", flat=True)) == [
        "created",
        "rotated",
    ]
    doc = profile_key(api, new)
    assert doc["name"] == "ci" and Decimal(doc["spend"]) == job.cost
    assert Decimal(doc["spend_cap_remaining"]) == Decimal("5") - job.cost
    # The job run with the old secret is still the caller's.
    assert api.get(f"/v1/requests/{job.request_id}", key=new).status_code == 200


def test_revoked_key_cannot_be_rotated(client, api, alice_key):
    key = key_of(alice_key)
    keys.revoke(key)
    sudo_login(client, key.user)
    before = snapshot(key)
    response = client.post(f"/keys/{key.public_id}/rotate", rotate_form("0"))
    assert response.status_code == 302
    assert snapshot(key) == before


# --- expiry --------------------------------------------------------------------------------------


def test_expired_key_is_401_and_the_expiry_is_logged_once(api, alice_key):
    key = key_of(alice_key)
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    for _ in range(3):
        response = api.get("/v1/requests", key=alice_key)
        assert response.status_code == 401
        assert error(response)["code"] == "invalid_api_key"
    assert submit(api, alice_key).status_code == 401
    assert KeyEvent.objects.filter(key=key, kind="expired").count() == 1
    key.refresh_from_db()
    assert key.status == "expired"


def test_key_expiring_in_the_future_works(api, alice_key):
    key = key_of(alice_key)
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() + timedelta(minutes=5))
    assert api.get("/v1/requests", key=alice_key).status_code == 200
    assert not KeyEvent.objects.filter(kind="expired").exists()


# --- model allowlist -----------------------------------------------------------------------------


@pytest.fixture
def other_model(db):
    call_command("models", "add-openai", "other", "--base-url", "http://127.0.0.1:9/v1")
    return "other"


def test_allowlist_limits_listing_lookup_and_submits(api, alice_key, other_model):
    everything = {m["id"] for m in api.get("/v1/models").json()["data"]}
    assert {MODEL, other_model} <= everything
    key = key_of(alice_key)
    keys.update(key, allowed_models=[MODEL])
    listed = api.get("/v1/models", key=alice_key).json()["data"]
    assert [m["id"] for m in listed] == [MODEL]
    assert api.get(f"/v1/models/{MODEL}", key=alice_key).status_code == 200
    response = api.get(f"/v1/models/{other_model}", key=alice_key)
    assert response.status_code == 403
    assert error(response)["code"] == "model_not_allowed"
    assert error(response)["param"] == "model"
    response = api.post("/v1/generate-text", {"model": other_model, "prompt": "hi"}, key=alice_key)
    assert response.status_code == 403
    assert (error(response)["code"], error(response)["param"]) == ("model_not_allowed", "model")
    assert not Job.objects.exists()
    assert submit(api, alice_key).status_code == 200
    # Without a key: the whole catalogue.
    assert {m["id"] for m in api.get("/v1/models").json()["data"]} == everything


def test_allowlist_of_another_model_refuses_the_builtin(api, alice_key, other_model):
    keys.update(key_of(alice_key), allowed_models=[other_model])
    response = submit(api, alice_key)
    assert response.status_code == 403
    assert error(response)["code"] == "model_not_allowed"
    assert [m["id"] for m in api.get("/v1/models", key=alice_key).json()["data"]] == [other_model]


# --- last used -----------------------------------------------------------------------------------


def _apikey_queries(queries, verb):
    return [
        q["sql"] for q in queries if q["sql"].startswith(verb) and "accounts_apikey" in q["sql"]
    ]


def test_last_used_time_and_coarse_ip_written_at_most_once_a_minute(api, alice_key):
    key = key_of(alice_key)
    assert key.last_used_at is None
    with CaptureQueriesContext(connection) as first:
        assert api.get("/v1/requests", key=alice_key, REMOTE_ADDR="203.0.113.77").status_code == 200
    key.refresh_from_db()
    assert key.last_used_ip == "203.0.113.0/24"
    assert timezone.now() - key.last_used_at < timedelta(seconds=10)
    assert len(_apikey_queries(first.captured_queries, "SELECT")) == 1  # auth: one read
    assert len(_apikey_queries(first.captured_queries, "UPDATE")) == 1
    n_first = len(first)  # counted now: the next request resets the connection's query log
    stamp = key.last_used_at

    with CaptureQueriesContext(connection) as second:
        assert api.get("/v1/requests", key=alice_key, REMOTE_ADDR="198.51.100.9").status_code == 200
    assert len(_apikey_queries(second.captured_queries, "SELECT")) == 1
    assert _apikey_queries(second.captured_queries, "UPDATE") == []
    n_second = len(second)
    key.refresh_from_db()
    assert (key.last_used_at, key.last_used_ip) == (stamp, "203.0.113.0/24")
    # Queries per authenticated read, with and without the throttled write (see the report).
    print(f"\nqueries per GET /v1/requests: {n_first} (with last-used write), {n_second}")
    assert n_first == n_second + 1
    for _ in range(3):
        run_a_job(api, alice_key)
    with CaptureQueriesContext(connection) as listing:
        body = api.get("/v1/requests", key=alice_key).json()
    assert len(body["data"]) == 3
    assert len(listing) == n_second  # no query per listed job

    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now() - timedelta(seconds=61))
    with CaptureQueriesContext(connection) as third:
        api.get("/v1/requests", key=alice_key, REMOTE_ADDR="2001:db8:abcd:12::1")
    assert len(_apikey_queries(third.captured_queries, "UPDATE")) == 1
    key.refresh_from_db()
    assert key.last_used_ip == "2001:db8:abcd::/48"


# --- audit log -----------------------------------------------------------------------------------


def test_audit_log_records_changes_with_coarse_ip_for_the_owner_only(client, alice, bob):
    sudo_login(client, alice)
    ip = {"REMOTE_ADDR": "198.51.100.23"}
    raw = secret_in(client.post("/keys/", new_key_form(name="audited"), **ip).content.decode())
    key = key_of(raw)
    client.post(f"/keys/{key.public_id}/", new_key_form(name="renamed"), **ip)
    client.post(f"/keys/{key.public_id}/rotate", rotate_form("0"), **ip)
    client.post(f"/keys/{key.public_id}/revoke", **ip)
    events = KeyEvent.objects.filter(key=key).order_by("created", "id")
    assert [e.kind for e in events] == ["created", "updated", "rotated", "revoked"]
    assert {e.ip for e in events} == {"198.51.100.0/24"}
    assert all(e.user == alice for e in events)
    assert events.get(kind="updated").key_name == "renamed"

    for page in ("/keys/", f"/keys/{key.public_id}/"):
        html = client.get(page).content.decode()
        for kind in ("created", "updated", "rotated", "revoked"):
            assert kind in html, (page, kind)
        assert "198.51.100.0/24" in html
        assert "198.51.100.23" not in html

    sudo_login(client, bob)
    html = client.get("/keys/").content.decode()
    assert "198.51.100" not in html and key.prefix not in html and "renamed" not in html
    assert client.get(f"/keys/{key.public_id}/").status_code == 404


# --- keys pages ----------------------------------------------------------------------------------


def test_create_key_with_every_setting_on_the_page(client, api, alice_with_credits):
    alice_with_credits.tier = "pro"
    alice_with_credits.save()
    sudo_login(client, alice_with_credits)
    tomorrow = (timezone.now() + timedelta(days=1)).date()
    response = client.post(
        "/keys/",
        new_key_form(
            name="nightly",
            tier="pro",
            expires_on=tomorrow.isoformat(),
            spend_cap="2.5",
            spend_cap_period="monthly",
            allowed_models=[MODEL],
        ),
    )
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    raw = secret_in(response.content.decode())
    key = key_of(raw)
    assert (key.name, key.tier, key.spend_cap, key.spend_cap_period, key.allowed_models) == (
        "nightly",
        "pro",
        Decimal("2.5"),
        "monthly",
        [MODEL],
    )
    assert key.expires_at == datetime.combine(tomorrow, datetime.min.time(), tzinfo=UTC)
    assert profile_key(api, raw)["spend_cap_remaining"] == "2.5"


def test_edit_key_settings_on_the_page(client, alice):
    key, _ = keys.create_key(alice, "old name")
    sudo_login(client, alice)
    assert client.get(f"/keys/{key.public_id}/").status_code == 200
    response = client.post(
        f"/keys/{key.public_id}/",
        new_key_form(name="new name", spend_cap="1", spend_cap_period="daily"),
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.name, key.spend_cap, key.spend_cap_period) == ("new name", Decimal(1), "daily")
    assert KeyEvent.objects.filter(key=key, kind="updated").count() == 1
    # Clearing the cap clears its period too.
    client.post(f"/keys/{key.public_id}/", new_key_form(name="new name", spend_cap=""))
    key.refresh_from_db()
    assert (key.spend_cap, key.spend_cap_period) == (None, "")


BAD_INPUTS = {
    "negative cap": {"spend_cap": "-1"},
    "not a number": {"spend_cap": "lots"},
    "past expiry": {"expires_on": "2020-01-01"},
    "expiry today": {"expires_on": "today"},
    "tier above the account's": {"tier": "pro"},
    "unlimited tier": {"tier": "unlimited"},
    "unknown model": {"allowed_models": ["no-such-model"]},
    "no name": {"name": ""},
}


def _bad(fields):
    if fields.get("expires_on") == "today":
        fields = {**fields, "expires_on": timezone.now().date().isoformat()}
    return new_key_form(**fields)


@pytest.mark.parametrize("fields", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_creates_and_changes_nothing(client, alice, fields):
    sudo_login(client, alice)
    response = client.post("/keys/", _bad(fields))
    assert response.status_code == 200
    assert "has-error" in response.content.decode()
    assert not ApiKey.objects.exists() and not KeyEvent.objects.exists()

    key, _ = keys.create_key(alice, "kept")
    before = snapshot(key)
    response = client.post(f"/keys/{key.public_id}/", _bad(fields))
    assert response.status_code == 200
    assert "has-error" in response.content.decode()
    assert snapshot(key) == before


def test_another_users_key_is_404_everywhere_and_unchanged(client, alice, bob):
    key, raw = keys.create_key(alice, "alice's")
    before = snapshot(key)
    sudo_login(client, bob)
    base = f"/keys/{key.public_id}/"
    assert client.get(base).status_code == 404
    assert client.post(base, new_key_form(name="stolen")).status_code == 404
    assert client.post(base + "rotate", rotate_form("0")).status_code == 404
    assert client.post(base + "revoke").status_code == 404
    assert client.get(f"/keys/{uuid.uuid4()}/").status_code == 404
    assert snapshot(key) == before
    assert keys.authenticate_key(raw) is not None


def test_keys_pages_need_a_login(alice):
    key, raw = keys.create_key(alice, "k")
    before = snapshot(key)
    anonymous = Client()
    for method, path in (
        ("get", "/keys/"),
        ("post", "/keys/"),
        ("get", f"/keys/{key.public_id}/"),
        ("post", f"/keys/{key.public_id}/"),
        ("post", f"/keys/{key.public_id}/rotate"),
        ("post", f"/keys/{key.public_id}/revoke"),
    ):
        response = getattr(anonymous, method)(path)
        assert response.status_code == 302, (method, path)
        assert response["Location"].startswith("/accounts/login/?next="), (method, path)
    assert snapshot(key) == before and ApiKey.objects.count() == 1


def test_keys_pages_enforce_csrf(alice):
    key, raw = keys.create_key(alice, "k")
    before = snapshot(key)
    strict = Client(enforce_csrf_checks=True)
    sudo_login(strict, alice)
    assert strict.post("/keys/", new_key_form()).status_code == 403
    assert strict.post(f"/keys/{key.public_id}/", new_key_form(name="x")).status_code == 403
    assert strict.post(f"/keys/{key.public_id}/rotate", rotate_form("0")).status_code == 403
    assert strict.post(f"/keys/{key.public_id}/revoke").status_code == 403
    assert snapshot(key) == before and ApiKey.objects.count() == 1
    # With the page's token it works.
    html = strict.get(f"/keys/{key.public_id}/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    response = strict.post(f"/keys/{key.public_id}/revoke", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302


def test_sudo_mode_is_required_to_create_edit_and_rotate(client, alice):
    key, raw = keys.create_key(alice, "k")
    before = snapshot(key)
    client.force_login(alice)  # logged in long ago: no recent authentication
    assert client.get("/keys/").status_code == 200
    assert client.get(f"/keys/{key.public_id}/").status_code == 200
    for path, data in (
        ("/keys/", new_key_form(name="sneaky")),
        (f"/keys/{key.public_id}/", new_key_form(name="sneaky")),
        (f"/keys/{key.public_id}/rotate", rotate_form("0")),
    ):
        response = client.post(path, data)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/accounts/reauthenticate/"), path
    assert snapshot(key) == before and ApiKey.objects.count() == 1
    assert keys.authenticate_key(raw) is not None

    # An authentication older than the sudo window does not count either.
    session = client.session
    old = time.time() - settings.ACCOUNT_REAUTHENTICATION_TIMEOUT - 5
    session[AUTHENTICATION_METHODS_SESSION_KEY] = [{"method": "password", "at": old}]
    session.save()
    response = client.post("/keys/", new_key_form(name="sneaky"))
    assert response["Location"].startswith("/accounts/reauthenticate/")
    assert ApiKey.objects.count() == 1

    # Entering the password again (as a user would) opens sudo mode.
    response = client.post("/accounts/reauthenticate/", {"password": "alice-password-1"})
    assert response.status_code == 302
    response = client.post(f"/keys/{key.public_id}/rotate", rotate_form("0"))
    assert response.status_code == 200
    assert keys.authenticate_key(raw) is None
    assert keys.authenticate_key(secret_in(response.content.decode())) is not None


def test_sudo_login_can_create_edit_and_rotate(client, alice):
    sudo_login(client, alice)
    raw = secret_in(client.post("/keys/", new_key_form(name="fresh")).content.decode())
    key = key_of(raw)
    assert client.post(f"/keys/{key.public_id}/", new_key_form(name="fresher")).status_code == 302
    new = rotate_on_page(client, key, "0")
    key.refresh_from_db()
    assert key.name == "fresher" and keys.authenticate_key(new) == key


def test_wrong_methods_on_rotate_and_revoke_change_nothing(client, alice):
    key, raw = keys.create_key(alice, "k")
    before = snapshot(key)
    sudo_login(client, alice)
    assert client.get(f"/keys/{key.public_id}/revoke").status_code == 405
    # GET on rotate: 405, or (where a re-authentication ends on that URL) back to the key page.
    response = client.get(f"/keys/{key.public_id}/rotate")
    assert response.status_code in (302, 405)
    if response.status_code == 302:
        assert response["Location"] == f"/keys/{key.public_id}/"
    assert SECRET_RE.search(response.content.decode()) is None
    for method in ("put", "delete"):
        assert getattr(client, method)(f"/keys/{key.public_id}/revoke").status_code == 405
    assert snapshot(key) == before
    assert keys.authenticate_key(raw) is not None


def test_a_reloaded_rotate_form_does_not_rotate_twice(client, alice):
    key, raw = keys.create_key(alice, "k")
    sudo_login(client, alice)
    form = rotate_form("0")
    first = client.post(f"/keys/{key.public_id}/rotate", form)
    new = secret_in(first.content.decode())
    again = client.post(f"/keys/{key.public_id}/rotate", form)
    assert again.status_code == 302
    assert keys.authenticate_key(new) is not None
    assert KeyEvent.objects.filter(key=key, kind="rotated").count() == 1


# --- the secret is shown once --------------------------------------------------------------------


def test_raw_key_appears_in_no_page_after_its_creation(client, api, alice_with_credits):
    sudo_login(client, alice_with_credits)
    created = client.post("/keys/", new_key_form(name="once"))
    raw = secret_in(created.content.decode())
    key = key_of(raw)
    job = run_a_job(api, raw)
    pages = [
        "/",
        "/models/",
        f"/models/{MODEL}/",
        "/keys/",
        f"/keys/{key.public_id}/",
        "/account/",
        "/account/delete/",
        f"/jobs/{job.request_id}/",
        "/jobs/",
        f"/models/{MODEL}/docs",
        f"/models/{MODEL}/chat",
        "/compare/",
        "/dashboard/recent",
        "/balance",
        "/v1/docs",
        "/v1/openapi.json",
        "/accounts/email/",
        "/accounts/password/change/",
        "/accounts/2fa/",
        "/accounts/sessions/",
    ]
    secrets = {"secret": raw, "random part": raw[12:], "hash": key.hashed}
    for page in pages:
        response = client.get(page, follow=True)
        assert response.status_code == 200, page
        body = response.content.decode()
        for what, value in secrets.items():
            assert value not in body, (page, what)
        assert SECRET_RE.search(body) is None, page

    # Rotation: the new secret is in the rotate response and nowhere after it.
    rotated = client.post(f"/keys/{key.public_id}/rotate", rotate_form("1h"))
    new = secret_in(rotated.content.decode())
    assert raw not in rotated.content.decode()
    key.refresh_from_db()
    secrets = {"new": new, "new part": new[12:], "new hash": key.hashed, "old hash": raw}
    for page in pages:
        body = client.get(page, follow=True).content.decode()
        for what, value in secrets.items():
            assert value not in body, (page, what)
        assert key.previous_hashed not in body, page


# --- admin ---------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, db):
    staff = User.objects.create_superuser(email="root@example.com", password="root-password-1")
    client.force_login(staff)
    return client


def test_admin_shows_keys_without_secrets_or_hashes(admin_client, alice):
    key, raw = keys.create_key(alice, "admin-visible")
    new = keys.rotate(key, grace=timedelta(hours=1))
    key.refresh_from_db()
    hidden = [raw, raw[12:], new, new[12:], key.hashed, key.previous_hashed]
    for page in ("/admin/accounts/apikey/", f"/admin/accounts/apikey/{key.pk}/change/"):
        response = admin_client.get(page)
        assert response.status_code == 200, page
        body = response.content.decode()
        assert "admin-visible" in body and key.prefix in body
        for value in hidden:
            assert value not in body, page
    assert admin_client.get("/admin/accounts/keyevent/").status_code == 200


def test_admin_revoke_action_revokes_and_logs(admin_client, alice, bob):
    key, raw = keys.create_key(alice, "a")
    other, other_raw = keys.create_key(bob, "b")
    response = admin_client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke_keys", "_selected_action": [str(key.pk)], "index": "0"},
        REMOTE_ADDR="192.0.2.44",
    )
    assert response.status_code == 302
    assert keys.authenticate_key(raw) is None
    assert keys.authenticate_key(other_raw) is not None
    event = KeyEvent.objects.get(kind="revoked")
    assert (event.key, event.ip) == (key, "192.0.2.0/24")


def test_admin_key_event_search_by_prefix(admin_client, alice, bob):
    key_a, _ = keys.create_key(alice, "alpha-key")
    key_b, _ = keys.create_key(bob, "bravo-key")
    body = admin_client.get("/admin/accounts/keyevent/", {"q": key_a.prefix}).content.decode()
    assert "alpha-key" in body
    assert "bravo-key" not in body and key_b.prefix not in body


def test_apikey_revoke_command_writes_a_revoked_event(alice):
    key, raw = keys.create_key(alice, "cli")
    call_command("apikey", "revoke", key.prefix)
    assert keys.authenticate_key(raw) is None
    assert KeyEvent.objects.filter(key=key, kind="revoked").count() == 1
    assert ApiKey.objects.get(pk=key.pk).status == "revoked"
