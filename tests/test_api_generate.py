"""POST /v1/generate-text and the job endpoints (CONTRACT §4, §6)."""

import json
import uuid
from decimal import Decimal

import pytest

from accounts import keys
from billing import ledger
from playground.models import Job

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "trigram-pydoc"


def submit(api, key, **body):
    return api.post("/v1/generate-text", {"model": MODEL, "prompt": "The class", **body}, key=key)


def test_submit_returns_pending_document_and_job_runs(api, alice_key):
    response = submit(api, alice_key, max_tokens=8, seed=3)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"request_id", "model", "status", "created"}
    assert body["status"] == "pending" and body["model"] == MODEL
    poll = api.post("/v1/generate-text", {"request_id": body["request_id"]}, key=alice_key).json()
    assert poll["status"] == "success"
    assert poll["progress"] == 1
    assert poll["usage"]["completion_tokens"] == 8
    assert poll["usage"]["total_tokens"] == poll["usage"]["prompt_tokens"] + 8
    assert poll["text"]
    assert Decimal(poll["cost"]) > 0
    assert api.get(f"/v1/requests/{body['request_id']}", key=alice_key).json() == poll


def test_wait_for_result_returns_final_document(api, alice_key):
    response = submit(api, alice_key, max_tokens=4, wait_for_result=True)
    assert response.status_code == 200
    assert response.json()["status"] == "success"


def test_credits_held_then_captured(api, alice_key, alice_with_credits, monkeypatch):
    from playground.engine import registry

    monkeypatch.setattr(registry, "enqueue", lambda job: None)  # keep the job pending
    body = submit(api, alice_key, max_tokens=100).json()
    job = Job.objects.get(request_id=body["request_id"])
    balance, available = ledger.balances(alice_with_credits)
    assert balance == Decimal("10")
    assert available == Decimal("10") - job.hold_amount
    assert job.hold_amount == Decimal("0.00202")  # 2 prompt tokens at 0.01/1K + 100 at 0.02/1K

    from playground.engine.runner import run_job

    run_job(job.pk)
    job.refresh_from_db()
    balance, available = ledger.balances(alice_with_credits)
    assert balance == available == Decimal("10") - job.cost
    assert job.cost == Decimal("0.00002") + Decimal("0.00002") * job.usage["completion_tokens"]
    kinds = list(job.ledger.order_by("id").values_list("kind", "amount"))
    assert kinds == [
        ("hold", -job.hold_amount),
        ("release", job.hold_amount),
        ("capture", -job.cost),
    ]


def test_failing_backend_fails_job_and_charges_nothing(
    api, alice_key, alice_with_credits, monkeypatch
):
    from playground.engine import textgen

    def broken(params, emit):
        emit.delta("partial")
        raise RuntimeError("boom at /secret/path")

    monkeypatch.setattr(textgen, "run_text", broken)
    body = submit(api, alice_key, wait_for_result=True).json()
    assert body["status"] == "failed"
    assert body["cost"] == "0"
    assert body["error"]["code"] == "internal_error"
    assert "secret" not in json.dumps(body) and "boom" not in json.dumps(body)
    assert ledger.balances(alice_with_credits) == (Decimal("10"), Decimal("10"))


def test_insufficient_credits_is_402_and_changes_nothing(api, bob):
    _, raw = keys.create_key(bob, "k")
    response = submit(api, raw)
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_credits"
    assert Job.objects.count() == 0
    assert ledger.balances(bob) == (0, 0)


@pytest.mark.parametrize(
    "body,param",
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 5000}, "max_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 3}, "temperature"),
        ({"nonsense": 1}, "nonsense"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"prompt": None, "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"prompt": None, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"wait_for_result": "yes"}, "wait_for_result"),
    ],
)
def test_bad_parameters_are_400_naming_the_field(api, alice_key, body, param):
    response = submit(api, alice_key, **body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert Job.objects.count() == 0


def test_prompt_and_messages_together_is_400(api, alice_key):
    response = submit(api, alice_key, messages=[{"role": "user", "content": "hi"}])
    assert response.status_code == 400


def test_chat_messages_run(api, alice_key):
    body = api.post(
        "/v1/generate-text",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "What is a class?"}],
            "max_tokens": 5,
            "wait_for_result": True,
        },
        key=alice_key,
    ).json()
    assert body["status"] == "success" and body["usage"]["completion_tokens"] <= 5


def test_unknown_model_is_404_model_not_found(api, alice_key):
    response = api.post("/v1/generate-text", {"model": "nope", "prompt": "x"}, key=alice_key)
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": "No model 'nope'.",
        "type": "not_found_error",
        "code": "model_not_found",
        "param": "model",
    }


def test_model_of_another_modality_is_400(api, alice_key):
    response = api.post("/v1/generate-image", {"model": MODEL, "prompt": "x"}, key=alice_key)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


@pytest.mark.parametrize("payload", ["{not json", "[1, 2]", ""])
def test_invalid_json_is_400(api, alice_key, payload):
    response = api.post("/v1/generate-text", payload, key=alice_key)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_no_key_is_401(api):
    response = api.post("/v1/generate-text", {"model": MODEL, "prompt": "x"})
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "code", "param"}


@pytest.mark.parametrize("header", ["Bearer pgk_notakey_atall_0123456789", "Basic abc", "Bearer "])
def test_bad_key_is_401_even_on_public_endpoints(client, header):
    for path in ("/v1/models", f"/v1/models/{MODEL}"):
        response = client.get(path, HTTP_AUTHORIZATION=header)
        assert response.status_code == 401, path
        assert response.json()["error"]["type"] == "authentication_error"


def test_revoked_key_is_401(api, alice_with_credits):
    key, raw = keys.create_key(alice_with_credits, "k")
    assert submit(api, raw).status_code == 200
    keys.revoke(key)
    assert submit(api, raw).status_code == 401
    assert api.get("/v1/requests", key=raw).status_code == 401


def test_another_users_job_is_404_like_an_unknown_one(api, alice_key, bob_key):
    request_id = submit(api, alice_key).json()["request_id"]
    for rid in (request_id, str(uuid.uuid4()), "not-a-uuid"):
        poll = api.post("/v1/generate-text", {"request_id": rid}, key=bob_key)
        assert poll.status_code == 404
        assert api.get(f"/v1/requests/{rid}", key=bob_key).status_code == 404
        assert api.post(f"/v1/requests/{rid}/cancel", {}, key=bob_key).status_code == 404
    assert api.get(f"/v1/requests/{request_id}", key=alice_key).status_code == 200


def test_cancel_pending_job_releases_hold(api, alice_key, alice_with_credits, monkeypatch):
    from playground.engine import registry

    monkeypatch.setattr(registry, "enqueue", lambda job: None)
    rid = submit(api, alice_key).json()["request_id"]
    body = api.post(f"/v1/requests/{rid}/cancel", {}, key=alice_key).json()
    assert body["status"] == "canceled" and body["cost"] == "0"
    assert ledger.balances(alice_with_credits) == (Decimal("10"), Decimal("10"))
    # Canceling again, or a worker picking it up later, changes nothing.
    assert api.post(f"/v1/requests/{rid}/cancel", {}, key=alice_key).json()["status"] == "canceled"
    from playground.engine.runner import run_job

    run_job(Job.objects.get(request_id=rid).pk)
    assert Job.objects.get(request_id=rid).status == "canceled"
    assert ledger.balances(alice_with_credits) == (Decimal("10"), Decimal("10"))


def test_cancel_finished_job_is_unchanged(api, alice_key):
    done = submit(api, alice_key, wait_for_result=True).json()
    again = api.post(f"/v1/requests/{done['request_id']}/cancel", {}, key=alice_key).json()
    assert again == done


def test_list_requests_newest_first_with_cursor(api, alice_key, bob_key):
    ids = [submit(api, alice_key, max_tokens=1).json()["request_id"] for _ in range(5)]
    submit(api, bob_key, max_tokens=1)
    first = api.get("/v1/requests?limit=2", key=alice_key).json()
    assert [d["request_id"] for d in first["data"]] == ids[::-1][:2]
    assert first["has_more"] is True
    seen = [d["request_id"] for d in first["data"]]
    cursor = first["next_cursor"]
    while cursor:
        page = api.get(f"/v1/requests?limit=2&cursor={cursor}", key=alice_key).json()
        seen += [d["request_id"] for d in page["data"]]
        cursor = page["next_cursor"]
    assert seen == ids[::-1]
    assert api.get("/v1/requests?status=success", key=alice_key).json()["data"]
    assert api.get("/v1/requests?status=bogus", key=alice_key).status_code == 400
    assert api.get("/v1/requests?limit=500", key=alice_key).json()["error"]["param"] == "limit"
    assert api.get("/v1/requests?cursor=zzz", key=alice_key).status_code == 400


def test_profile(api, alice_key):
    submit(api, alice_key, max_tokens=3)
    body = api.get("/v1/user/profile", key=alice_key).json()
    assert body["email"] == "alice@example.com"
    assert body["balance"] == body["available"]
    assert Decimal(body["balance"]) + Decimal(body["key"]["spend"]) == Decimal("10")
    assert body["key"]["prefix"] == alice_key[:12]


def test_models_list_and_detail(client):
    listing = client.get("/v1/models").json()
    assert listing["object"] == "list"
    model = next(m for m in listing["data"] if m["id"] == MODEL)
    assert model["endpoint"] == "/v1/generate-text" and model["modality"] == "text"
    assert model["pricing"]["per_1k_output_tokens"] == "0.02"
    assert all(isinstance(v, str) for k, v in model["pricing"].items())
    assert model["parameters"]["properties"]["max_tokens"]["maximum"] == 1024
    assert client.get(f"/v1/models/{MODEL}").json() == model
    missing = client.get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_unknown_route_and_wrong_method_are_json(api, alice_key):
    response = api.get("/v1/nowhere", key=alice_key)
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"
    response = api.get("/v1/generate-text", key=alice_key)
    assert response.status_code == 405
    assert "POST" in response["Allow"]
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_body_over_limit_is_413(api, alice_key, settings):
    settings.PLAYGROUND_MAX_BODY_BYTES = 1000
    response = submit(api, alice_key, prompt="x" * 2000)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_money_in_json_is_decimal_strings(api, alice_key):
    body = submit(api, alice_key, max_tokens=2, wait_for_result=True).json()
    assert isinstance(body["cost"], str) and "e" not in body["cost"].lower()


def test_embedding_model_on_generate_text_is_400(api, alice_key):
    response = api.post("/v1/generate-text", {"model": "hash-embed", "input": "x"}, key=alice_key)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
    assert "/v1/embeddings" in response.json()["error"]["message"]
