"""One error format on /v1 (CONTRACT §6), Server-Timing and X-Request-Id, the concurrency limit."""

import logging
import re
import threading

import httpx
import pytest

from playground.models import Job
from tests.conftest import require_postgres
from tests.live import start_site

MODEL = "trigram-pydoc"
ERROR_KEYS = {"message", "type", "code", "param"}


def timings(header: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"(\w+);dur=([\d.]+)", header or "")}


@pytest.fixture
def no_engine(monkeypatch):
    from playground.engine import registry

    monkeypatch.setattr(registry, "enqueue", lambda job: None)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "path,param",
    [
        ("/v1/requests?limit=abc", "limit"),
        ("/v1/requests?limit=", "limit"),
        ("/v1/requests?limit=1e400", "limit"),
        ("/v1/usage?start=yesterday", "start"),
    ],
)
def test_query_validation_is_400_naming_the_parameter(api, alice_key, path, param):
    response = api.get(path, key=alice_key)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert error["param"] == param and error["type"] == "invalid_request_error"


@pytest.mark.django_db(transaction=True)
def test_unexpected_exception_is_500_without_internals(
    api, alice_key, monkeypatch, caplog, no_engine
):
    from playground import jobs

    rid = api.post("/v1/generate-text", {"model": MODEL, "prompt": "x"}, key=alice_key).json()[
        "request_id"
    ]

    def broken(job):
        raise RuntimeError("db password hunter2 at /srv/secret.py")

    monkeypatch.setattr(jobs, "status_document", broken)
    with caplog.at_level(logging.ERROR, logger="playground.api"):
        response = api.get(f"/v1/requests/{rid}", key=alice_key)
    assert response.status_code == 500
    body = response.json()
    assert set(body["error"]) == ERROR_KEYS and body["error"]["code"] == "internal_error"
    assert "hunter2" not in response.content.decode() and "secret" not in response.content.decode()
    request_id = response["X-Request-Id"]
    assert request_id.startswith("req_") and request_id in body["error"]["message"]
    # The log has the request id and the traceback; the answer has neither internals.
    assert any(request_id in r.getMessage() and r.exc_info for r in caplog.records)


@pytest.mark.django_db(transaction=True)
def test_every_response_has_server_timing_and_request_id(api, alice_key, no_engine):
    submit = api.post("/v1/generate-text", {"model": MODEL, "prompt": "x"}, key=alice_key)
    assert submit.status_code == 200
    spans = timings(submit["Server-Timing"])
    assert {"auth", "limits", "db", "queue", "app"} <= set(spans)
    assert spans["app"] >= spans["auth"] and spans["app"] >= spans["db"]
    assert 'desc="' in submit["Server-Timing"]  # the query count
    for response in (
        api.get("/v1/nowhere", key=alice_key),
        api.get("/v1/requests"),  # 401
        api.get("/v1/models"),
    ):
        assert "app" in timings(response["Server-Timing"])
        assert response["X-Request-Id"].startswith("req_")
    ids = {api.get("/v1/models")["X-Request-Id"] for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.django_db(transaction=True)
def test_wrong_method_on_a_ninja_route_is_405_with_allow(api, alice_key):
    response = api.post("/v1/models", {}, key=alice_key)
    assert response.status_code == 405
    assert "GET" in response["Allow"]
    assert set(response.json()["error"]) == ERROR_KEYS


@pytest.mark.django_db(transaction=True)
def test_concurrent_jobs_limit_per_tier(api, alice_key, settings, no_engine):
    settings.PLAYGROUND_CONCURRENT_JOBS = {"free": 2}
    body = {"model": MODEL, "prompt": "x"}
    first = api.post("/v1/generate-text", body, key=alice_key).json()["request_id"]
    assert api.post("/v1/generate-text", body, key=alice_key).status_code == 200
    refused = api.post("/v1/generate-text", body, key=alice_key)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "concurrency_limited"
    assert refused["Retry-After"] == "1"
    assert Job.objects.count() == 2
    api.post(f"/v1/requests/{first}/cancel", {}, key=alice_key)
    assert api.post("/v1/generate-text", body, key=alice_key).status_code == 200
    settings.PLAYGROUND_CONCURRENT_JOBS = {"pro": 2}  # another tier's limit does not apply
    assert api.post("/v1/generate-text", body, key=alice_key).status_code == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "path,body,param",
    [
        ("/v1/generate-text", {"model": MODEL, "prompt": "x", "stop": [1]}, "stop.0"),
        ("/v1/generate-text", {"model": MODEL, "prompt": "x", "stop": 5}, "stop"),
        ("/v1/embeddings", {"model": "hash-embed", "input": ["a", 5]}, "input.1"),
        ("/v1/embeddings", {"model": "hash-embed", "input": {"a": 1}}, "input"),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user"}]}, None),
    ],
)
def test_param_names_the_field_without_pydantic_union_tags(api, alice_key, path, body, param):
    response = api.post(path, body, key=alice_key)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    if param is None:  # whatever field it names, no type tag in it
        assert error["param"] and "[" not in error["param"], error
    else:
        assert error["param"] == param, error
    assert not Job.objects.exists()


def test_loc_to_param_drops_type_tags_only():
    from playground.errors import loc_to_param

    assert loc_to_param(("body", "payload", "stop", "list[str]", 0)) == "stop.0"
    assert loc_to_param(("body", "payload", "input", "str")) == "input"
    assert loc_to_param(("body", "payload", "messages", 0, "content")) == "messages.0.content"
    assert loc_to_param(("query", "limit")) == "limit"
    assert loc_to_param(("header", "idempotency-key")) == "idempotency-key"
    assert loc_to_param(("x", "function-after[check(), str]", "url")) == "x.url"


@pytest.mark.django_db(transaction=True)
def test_a_disallowed_host_is_400_and_creates_no_job(api, alice_key):
    body = {"model": MODEL, "prompt": "x", "wait_for_result": True}
    for response in (
        api.post("/v1/generate-text", body, key=alice_key, HTTP_HOST="evil.com"),
        api.get("/v1/models", HTTP_HOST="evil.com"),
    ):
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert set(error) == ERROR_KEYS and error["code"] == "invalid_host"
        assert response.headers["X-Request-Id"].startswith("req_")
    assert not Job.objects.exists()


# --- The same through daphne (the ASGI path with the /v1 handler) -------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = start_site(
        tmp_path_factory.mktemp("errors-site"), extra_env={"PLAYGROUND_MAX_BODY_BYTES": "2000"}
    )
    site.key = site.user_with_key("errors@example.com", "10")
    yield site
    site.stop()


def test_errors_through_the_asgi_api_handler(site):
    headers = {"Authorization": f"Bearer {site.key}"}
    with httpx.Client(base_url=site.base_url, headers=headers, timeout=30) as http:
        cases = [
            (http.get("/v1/nowhere"), 404, "not_found"),
            (http.delete("/v1/models"), 405, "method_not_allowed"),
            (http.get("/v1/generate-text"), 405, "method_not_allowed"),
            (http.post("/v1/generate-text", content=b"x" * 3000), 413, "request_too_large"),
            (http.get("/v1/requests?limit=abc"), 400, "invalid_parameter"),
            (http.post("/v1/generate-text", content=b"{nope"), 400, "invalid_json"),
            (http.get("/v1/requests", headers={"Authorization": "Bearer x"}), 401, None),
            (http.get("/v1/models", headers={"Host": "evil.com"}), 400, "invalid_host"),
        ]
        for response, status, code in cases:
            assert response.status_code == status, (response.request.url, response.text)
            error = response.json()["error"]
            assert set(error) == ERROR_KEYS
            if code:
                assert error["code"] == code
            assert response.headers["x-request-id"].startswith("req_")
            assert "app" in timings(response.headers["server-timing"])
        assert "GET" in cases[1][0].headers["allow"]
        assert "POST" in cases[2][0].headers["allow"]
        submit = http.post(
            "/v1/generate-text", json={"model": MODEL, "prompt": "x", "wait_for_result": True}
        )
        assert submit.status_code == 200
        spans = timings(submit.headers["server-timing"])
        assert {"auth", "limits", "db", "queue", "wait", "app"} <= set(spans)
        assert "set-cookie" not in submit.headers  # no session machinery on the API
        # Pages keep their own middleware.
        page = http.get("/models/")
        assert page.status_code == 200 and "server-timing" not in page.headers


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_concurrency_limit_is_exact_under_simultaneous_submits(alice_key, settings, no_engine):
    require_postgres()
    from django.db import connections
    from django.test import Client

    settings.PLAYGROUND_CONCURRENT_JOBS = {"free": 3}
    codes = []
    barrier = threading.Barrier(8)

    def worker():
        client = Client()
        barrier.wait()
        response = client.post(
            "/v1/generate-text",
            {"model": MODEL, "prompt": "x"},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {alice_key}",
        )
        codes.append(response.status_code)
        connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(codes) == [200] * 3 + [429] * 5
    assert Job.objects.count() == 3
