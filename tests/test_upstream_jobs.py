"""Jobs on an operator-added OpenAI-compatible model, through the engine and the ledger."""

from decimal import Decimal

import pytest
from django.core.management import call_command

from billing import ledger

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def upstream_model(fake_openai, monkeypatch):
    monkeypatch.setenv("UPSTREAM_TEST_KEY", "sk-upstream-secret")
    call_command(
        "models",
        "add-openai",
        "scout",
        "--base-url",
        fake_openai.base_url,
        "--upstream-model",
        "meta/scout-17b",
        "--api-key-env",
        "UPSTREAM_TEST_KEY",
        "--per-1k-input",
        "1",
        "--per-1k-output",
        "2",
    )
    return fake_openai


def run(api, key, **body):
    body = {"model": "scout", "max_tokens": 50, "wait_for_result": True, **body}
    return api.post("/v1/generate-text", body, key=key)


def test_chat_job_on_upstream_bills_upstream_usage(
    api, alice_key, alice_with_credits, upstream_model
):
    response = run(api, alice_key, messages=[{"role": "user", "content": "hi"}])
    doc = response.json()
    assert doc["status"] == "success" and doc["model"] == "scout"
    assert doc["text"] == "Hello, world!"
    assert doc["usage"] == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    assert doc["cost"] == "0.015"  # 7 × 1/1K + 4 × 2/1K
    assert ledger.balances(alice_with_credits)[0] == Decimal("9.985")
    sent = upstream_model.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.json["model"] == "meta/scout-17b"
    assert sent.headers["authorization"] == "Bearer sk-upstream-secret"
    assert "meta/scout" not in response.content.decode()


def test_upstream_error_fails_job_charges_nothing(
    api, alice_key, alice_with_credits, upstream_model
):
    upstream_model.mode = "error500"
    from playground.engine import openai_backend

    openai_backend.BACKOFF_BASE = 0.01
    doc = run(api, alice_key, prompt="hi").json()
    assert doc["status"] == "failed" and doc["error"]["code"] == "upstream_error"
    assert doc["cost"] == "0"
    assert ledger.balances(alice_with_credits) == (Decimal("10"), Decimal("10"))
    assert "sk-upstream-secret" not in str(doc) and "127.0.0.1" not in str(doc)


def test_stream_cut_charges_only_what_was_delivered(
    api, alice_key, alice_with_credits, upstream_model
):
    upstream_model.mode = "cut"
    upstream_model.cut_after = 2
    doc = run(api, alice_key, prompt="hi there").json()
    assert doc["status"] == "failed" and doc["error"]["code"] == "upstream_error"
    assert doc["text"] == "Hello,"
    # 2 prompt words × 1/1K + 2 delivered chunks × 2/1K
    assert doc["cost"] == "0.006"
    assert ledger.balances(alice_with_credits)[0] == Decimal("9.994")


def test_removed_model_keeps_history(api, alice_key, upstream_model):
    rid = run(api, alice_key, prompt="hi").json()["request_id"]
    call_command("models", "remove", "scout")
    doc = api.get(f"/v1/requests/{rid}", key=alice_key).json()
    assert doc["model"] == "scout" and doc["status"] == "success"
    assert (
        api.post("/v1/generate-text", {"model": "scout", "prompt": "x"}, key=alice_key).status_code
        == 404
    )


def test_jobs_on_one_upstream_reuse_its_connection(api, alice_key, upstream_model):
    # The stream is read to its end after [DONE], so its connection goes back to the pool
    # (a TLS upstream would otherwise cost a handshake per job).
    for _ in range(3):
        assert run(api, alice_key, prompt="hi").json()["status"] == "success"
    assert len({r.client for r in upstream_model.requests[-3:]}) == 1
