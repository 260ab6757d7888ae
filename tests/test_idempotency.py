"""Idempotency-Key on submits (CONTRACT §4)."""

import threading

import pytest
from django.db import connections

from billing import ledger
from playground.engine import registry
from playground.models import Job
from tests.conftest import require_postgres

pytestmark = pytest.mark.django_db(transaction=True)
BODY = {"model": "trigram-pydoc", "prompt": "The class", "max_tokens": 4}


@pytest.fixture(autouse=True)
def _pending(monkeypatch):
    monkeypatch.setattr(registry, "enqueue", lambda job: None)


def submit(api, key, body=BODY, idem="k-1"):
    headers = {"HTTP_IDEMPOTENCY_KEY": idem} if idem is not None else {}
    return api.post("/v1/generate-text", body, key=key, **headers)


def test_repeat_returns_the_first_jobs_document(api, alice_key, alice_with_credits):
    first = submit(api, alice_key)
    assert first.status_code == 200
    # Key order does not matter: JSON-equal bodies are the same request.
    again = submit(api, alice_key, body=dict(reversed(list(BODY.items()))))
    assert again.status_code == 200
    assert again.json()["request_id"] == first.json()["request_id"]
    assert again.json()["status"] == "pending" and "progress" in again.json()
    assert Job.objects.count() == 1
    held = ledger.balances(alice_with_credits)
    assert held[0] - held[1] == Job.objects.get().hold_amount  # held once


def test_same_key_different_body_is_409(api, alice_key):
    submit(api, alice_key)
    response = submit(api, alice_key, body={**BODY, "max_tokens": 5})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert Job.objects.count() == 1


def test_rejected_submit_does_not_claim_the_key(api, alice_key):
    bad = submit(api, alice_key, body={**BODY, "max_tokens": 0})
    assert bad.status_code == 400
    good = submit(api, alice_key)
    assert good.status_code == 200 and Job.objects.count() == 1


def test_keys_are_per_account(api, alice_key, bob_key):
    a = submit(api, alice_key).json()["request_id"]
    b = submit(api, bob_key).json()["request_id"]
    assert a != b and Job.objects.count() == 2


def test_without_header_every_submit_is_a_job(api, alice_key):
    submit(api, alice_key, idem=None)
    submit(api, alice_key, idem=None)
    assert Job.objects.count() == 2


def test_key_expires_after_24_hours(api, alice_key):
    from datetime import timedelta

    from django.utils import timezone

    from playground.models import IdempotencyKey

    first = submit(api, alice_key).json()["request_id"]
    IdempotencyKey.objects.update(created=timezone.now() - timedelta(hours=25))
    second = submit(api, alice_key).json()["request_id"]
    assert first != second


def test_overlong_key_is_400(api, alice_key):
    assert submit(api, alice_key, idem="x" * 300).status_code == 400


@pytest.mark.services
def test_simultaneous_submits_make_one_job(api, alice_key):
    require_postgres()
    from django.test import Client

    results = []
    barrier = threading.Barrier(6)

    def worker():
        client = Client()
        barrier.wait()
        response = client.post(
            "/v1/generate-text",
            BODY,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {alice_key}",
            HTTP_IDEMPOTENCY_KEY="race",
        )
        results.append((response.status_code, response.json().get("request_id")))
        connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [code for code, _ in results] == [200] * 6
    assert len({rid for _, rid in results}) == 1
    assert Job.objects.count() == 1
