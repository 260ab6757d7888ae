"""POST /v1/batch/completions and GET /v1/batch/{id}: one job per prompt, results in order."""

import uuid
from decimal import Decimal

import pytest

from accounts import keys
from billing import ledger
from playground.models import Job

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "trigram-pydoc"


@pytest.fixture
def no_engine(monkeypatch):
    from playground.engine import registry

    monkeypatch.setattr(registry, "enqueue", lambda job: None)


def batch(api, key, prompts, **body):
    return api.post("/v1/batch/completions", {"model": MODEL, "prompts": prompts, **body}, key=key)


def test_small_batch_waits_and_returns_results_in_order(api, alice_key, alice_with_credits):
    prompts = ["The class", 5, "The for statement", [{"role": "user", "content": "Hi"}]]
    response = batch(api, alice_key, prompts, max_tokens=4, seed=1, wait_for_result=True)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "batch" and body["status"] == "completed"
    assert [item["index"] for item in body["data"]] == [0, 1, 2, 3]
    ok = [body["data"][i] for i in (0, 2, 3)]
    assert all(item["status"] == "success" and item["text"] for item in ok)
    assert body["data"][1]["request_id"] is None
    assert body["data"][1]["error"]["param"] == "prompts.1"
    assert body["counts"] == {
        "total": 4,
        "pending": 0,
        "running": 0,
        "success": 3,
        "failed": 1,
        "canceled": 0,
    }
    # Each item is a normal job: in history, billed.
    listed = [d["request_id"] for d in api.get("/v1/requests", key=alice_key).json()["data"]]
    assert {item["request_id"] for item in ok} <= set(listed)
    spent = sum(Decimal(item["cost"]) for item in ok)
    assert spent > 0
    assert ledger.balances(alice_with_credits) == (Decimal(10) - spent, Decimal(10) - spent)
    assert api.get(f"/v1/batch/{body['id']}", key=alice_key).json() == body


def test_large_batch_is_async_and_polled(api, alice_with_credits, no_engine):
    _, alice_key = keys.create_key(alice_with_credits, "pro", tier="pro")
    prompts = [f"The class {i}" for i in range(40)]
    response = batch(api, alice_key, prompts, max_tokens=2, wait_for_result=True)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "pending" and body["counts"]["pending"] == 40
    assert Job.objects.filter(batch__public_id=body["id"]).count() == 40
    from playground.engine.runner import run_job

    for job in Job.objects.filter(batch__public_id=body["id"]).order_by("batch_index")[:10]:
        run_job(job.pk)
    polled = api.get(f"/v1/batch/{body['id']}", key=alice_key).json()
    assert polled["status"] == "running" and polled["counts"]["success"] == 10
    for job in Job.objects.filter(batch__public_id=body["id"], status="pending"):
        run_job(job.pk)
    polled = api.get(f"/v1/batch/{body['id']}", key=alice_key).json()
    assert polled["status"] == "completed" and polled["counts"]["success"] == 40
    rids = [item["request_id"] for item in polled["data"]]
    by_index = dict(
        Job.objects.filter(batch__public_id=body["id"]).values_list("request_id", "batch_index")
    )
    assert [by_index[uuid.UUID(r)] for r in rids] == list(range(40))


def test_items_past_the_balance_fail_alone(api, bob):
    ledger.grant(bob, Decimal("0.005"), reason="test")
    _, raw = keys.create_key(bob, "k")
    body = batch(api, raw, ["x"] * 5, max_tokens=100, wait_for_result=True).json()
    codes = [item.get("error", {}).get("code") for item in body["data"]]
    assert codes[:2] == [None, None]  # 0.00202 held each
    assert set(codes[2:]) == {"insufficient_credits"}
    _, available = ledger.balances(bob)
    assert available >= 0


def test_cancel_batch_releases_holds(api, alice_key, alice_with_credits, no_engine):
    body = batch(api, alice_key, ["a", "b", "c"], max_tokens=50).json()
    assert ledger.balances(alice_with_credits)[1] < Decimal(10)
    canceled = api.post(f"/v1/batch/{body['id']}/cancel", {}, key=alice_key).json()
    assert canceled["counts"]["canceled"] == 3 and canceled["status"] == "completed"
    assert ledger.balances(alice_with_credits) == (Decimal(10), Decimal(10))


@pytest.mark.parametrize(
    "prompts,param",
    [(None, "prompts"), ("one", "prompts"), ([], "prompts"), (["x"] * 501, "prompts")],
)
def test_bad_batches_are_400_and_change_nothing(api, alice_key, prompts, param):
    response = batch(api, alice_key, prompts)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert Job.objects.count() == 0


def test_shared_parameter_error_is_per_item(api, alice_key):
    body = batch(api, alice_key, ["a", "b"], max_tokens=0).json()
    assert [item["error"]["param"] for item in body["data"]] == ["max_tokens", "max_tokens"]
    assert Job.objects.count() == 0


def test_unknown_model_no_key_other_user(api, alice_key, bob_key, no_engine):
    response = api.post("/v1/batch/completions", {"model": "nope", "prompts": ["x"]}, key=alice_key)
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert api.post("/v1/batch/completions", {"model": MODEL, "prompts": ["x"]}).status_code == 401
    bid = batch(api, alice_key, ["x"]).json()["id"]
    for other in (bid, "not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        response = api.get(f"/v1/batch/{other}", key=bob_key)
        assert response.status_code == 404 and response.json()["error"]["code"] == "batch_not_found"
        assert api.post(f"/v1/batch/{other}/cancel", {}, key=bob_key).status_code == 404
    assert api.get(f"/v1/batch/{bid}", key=alice_key).status_code == 200


def test_each_prompt_counts_against_the_submit_budget(api, alice_key, no_engine):
    # Alice's key is on the free tier: 20 submits a minute.
    response = batch(api, alice_key, ["x"] * 5)
    assert response.status_code == 200
    assert response["X-RateLimit-Remaining"] == "15"
    refused = batch(api, alice_key, ["x"] * 16)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "Retry-After" in refused
    assert Job.objects.count() == 5
