"""Webhooks: URL checks at submit, signatures, retries, the throttle, ownership."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from playground import webhooks
from playground.models import Job
from tests.fake_openai import FakeOpenAI
from tests.live import start_site

MODEL = "trigram-pydoc"


class Receiver:
    """A local HTTP server that records every POST and answers with the codes it is given."""

    def __init__(self):
        self.requests: list[dict] = []
        self.codes: dict[str, list[int]] = {}  # path -> codes to answer first (then 200)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                            "at": time.monotonic(),
                        }
                    )
                    codes = receiver.codes.get(self.path) or [200]
                    code = codes.pop(0) if len(codes) > 1 else codes[0]
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def wait_for(self, path: str, predicate, timeout: float = 15) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.at(path)
            if predicate(seen):
                return seen
            time.sleep(0.05)
        raise AssertionError(f"receiver: {path} got {len(self.at(path))} deliveries")


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = start_site(
        tmp_path_factory.mktemp("webhook-site"),
        extra_env={
            "PLAYGROUND_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
            "PLAYGROUND_WEBHOOK_RETRY_SECONDS": "0.3",
            "PLAYGROUND_WEBHOOK_MAX_ATTEMPTS": "4",
        },
    )
    site.key = site.user_with_key("hooks@example.com", "50")
    site.other_key = site.user_with_key("other@example.com", "50")
    yield site
    site.stop()


def call(site, method, path, key=None, **kwargs):
    headers = {"Authorization": f"Bearer {key or site.key}"}
    return httpx.request(method, site.base_url + path, headers=headers, timeout=30, **kwargs)


def body_of(delivery) -> dict:
    return json.loads(delivery["body"])


def test_completed_webhook_is_signed_and_verifies(site, receiver):
    url = receiver.url + "/signed"
    job = call(
        site,
        "POST",
        "/v1/generate-text",
        json={"model": MODEL, "prompt": "The class", "max_tokens": 4, "webhook_url": url},
    ).json()
    [delivery] = receiver.wait_for("/signed", lambda seen: len(seen) == 1)
    secret = call(site, "GET", "/v1/webhooks/secret").json()["secret"]
    assert secret.startswith("whsec_")
    payload = body_of(delivery)
    assert payload["type"] == "completed"
    assert payload["data"]["request_id"] == job["request_id"]
    assert payload["data"]["status"] == "success" and payload["data"]["text"]
    headers = delivery["headers"]
    assert headers["webhook-id"].startswith("msg_")
    assert webhooks.verify(secret, headers, delivery["body"])
    # A changed body, another secret or an old timestamp does not verify.
    assert not webhooks.verify(secret, headers, delivery["body"] + b" ")
    other = call(site, "GET", "/v1/webhooks/secret", key=site.other_key).json()["secret"]
    assert other != secret and not webhooks.verify(other, headers, delivery["body"])
    late = int(headers["webhook-timestamp"]) + 301
    assert not webhooks.verify(secret, headers, delivery["body"], now=late)
    # The attempt is listed with the job, and another user's view of it is 404.
    listed = call(site, "GET", f"/v1/requests/{job['request_id']}/webhooks").json()["data"]
    assert [(d["event"], d["status_code"], d["attempt"]) for d in listed] == [("completed", 200, 1)]
    assert listed[0]["id"] == headers["webhook-id"]
    hidden = call(site, "GET", f"/v1/requests/{job['request_id']}/webhooks", key=site.other_key)
    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "request_not_found"


def test_failed_delivery_is_retried_with_backoff_then_succeeds(site, receiver):
    receiver.codes["/flaky"] = [500, 503, 200]
    job = call(
        site,
        "POST",
        "/v1/generate-text",
        json={
            "model": MODEL,
            "prompt": "The class",
            "max_tokens": 2,
            "webhook_url": receiver.url + "/flaky",
        },
    ).json()
    seen = receiver.wait_for("/flaky", lambda seen: len(seen) == 3)
    assert len({d["headers"]["webhook-id"] for d in seen}) == 1  # one message, three attempts
    assert len({d["body"] for d in seen}) == 1
    gaps = [b["at"] - a["at"] for a, b in zip(seen, seen[1:], strict=False)]
    assert gaps[0] >= 0.25 and gaps[1] >= 0.55  # 0.3 s, then 0.6 s
    time.sleep(0.2)
    listed = call(site, "GET", f"/v1/requests/{job['request_id']}/webhooks").json()["data"]
    assert [(d["attempt"], d["status_code"], d["ok"]) for d in listed] == [
        (1, 500, False),
        (2, 503, False),
        (3, 200, True),
    ]
    time.sleep(1.5)
    assert len(receiver.at("/flaky")) == 3  # nothing after the success


def test_attempts_are_bounded(site, receiver):
    receiver.codes["/down"] = [500]
    call(
        site,
        "POST",
        "/v1/generate-text",
        json={
            "model": MODEL,
            "prompt": "x",
            "max_tokens": 1,
            "webhook_url": receiver.url + "/down",
        },
    )
    receiver.wait_for("/down", lambda seen: len(seen) == 4)
    time.sleep(2.6)  # the fifth attempt would have come 2.4 s after the fourth
    assert len(receiver.at("/down")) == 4


def test_output_events_are_throttled_and_coalesced(site, receiver):
    fake = FakeOpenAI().start()
    try:
        fake.chunks = [f" w{i}" for i in range(16)]
        fake.chunk_delay = 0.1
        site.manage("models", "add-openai", "slowhook", "--base-url", fake.base_url)
        job = call(
            site,
            "POST",
            "/v1/generate-text",
            json={
                "model": "slowhook",
                "prompt": "go",
                "webhook_url": receiver.url + "/throttle",
                "webhook_events_filter": ["start", "output", "completed"],
            },
        ).json()
        seen = receiver.wait_for(
            "/throttle", lambda seen: any(body_of(d)["type"] == "completed" for d in seen)
        )
    finally:
        fake.close()
    kinds = [body_of(d)["type"] for d in seen]
    assert kinds[0] == "start" and kinds[-1] == "completed"
    # 16 chunks over 1.5 s: without the throttle, 16+ output deliveries 0.1 s apart.
    assert 1 <= kinds.count("output") <= 4, kinds
    # Spaced by the throttle when sent; arrival adds network jitter (0.1 s apart without it).
    gaps = [b["at"] - a["at"] for a, b in zip(seen, seen[1:], strict=False)]
    assert min(gaps) >= 0.3, gaps
    texts = [body_of(d)["data"].get("text", "") for d in seen if body_of(d)["type"] == "output"]
    assert all(texts) and texts == sorted(texts, key=len)  # each carries the text so far
    final = body_of(seen[-1])["data"]
    assert final["request_id"] == job["request_id"]
    assert final["text"] == "".join(fake.chunks)


# --- In-process: checks at submit ----------------------------------------------------------


@pytest.fixture
def no_engine(monkeypatch):
    from playground.engine import registry

    monkeypatch.setattr(registry, "enqueue", lambda job: None)


def fake_dns(monkeypatch, *addresses):
    def getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",  # plain http
        "ftp://example.com/hook",
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://0.0.0.0/hook",
        "https://localhost/hook",
        "https:///nohost",
        "not a url",
        42,
    ],
)
def test_private_or_plain_http_urls_are_400(api, alice_key, url, no_engine):
    response = api.post(
        "/v1/generate-text", {"model": MODEL, "prompt": "x", "webhook_url": url}, key=alice_key
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == "webhook_url"
    assert Job.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_every_resolved_address_is_checked(api, alice_key, monkeypatch, no_engine):
    fake_dns(monkeypatch, "93.184.216.34", "10.0.0.7")  # one public, one private: refused
    body = {"model": MODEL, "prompt": "x", "webhook_url": "https://hooks.example.com/in"}
    response = api.post("/v1/generate-text", body, key=alice_key)
    assert response.status_code == 400 and response.json()["error"]["param"] == "webhook_url"
    fake_dns(monkeypatch, "93.184.216.34")
    response = api.post("/v1/generate-text", body, key=alice_key)
    assert response.status_code == 200
    job = Job.objects.get(request_id=response.json()["request_id"])
    assert job.webhook_url == "https://hooks.example.com/in"
    assert job.webhook_events == ["completed"]


@pytest.mark.django_db(transaction=True)
def test_allowed_host_may_be_http_and_loopback(api, alice_key, settings, no_engine):
    settings.PLAYGROUND_WEBHOOK_ALLOW_HOSTS = ["127.0.0.1"]
    body = {"model": MODEL, "prompt": "x", "webhook_url": "http://127.0.0.1:9/in"}
    assert api.post("/v1/generate-text", body, key=alice_key).status_code == 200
    body["webhook_url"] = "http://127.0.0.2:9/in"
    assert api.post("/v1/generate-text", body, key=alice_key).status_code == 400


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "events",
    [[], ["finished"], "completed", [1], None],
    ids=["empty", "unknown", "str", "int", "x"],
)
def test_bad_events_filter_is_400(api, alice_key, settings, events, no_engine):
    settings.PLAYGROUND_WEBHOOK_ALLOW_HOSTS = ["127.0.0.1"]
    body = {"model": MODEL, "prompt": "x", "webhook_events_filter": events}
    if events is not None:
        body["webhook_url"] = "http://127.0.0.1:9/in"
    else:  # a filter without a URL
        body["webhook_events_filter"] = ["completed"]
    response = api.post("/v1/generate-text", body, key=alice_key)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "webhook_events_filter"
    assert Job.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_events_filter_is_kept_in_order(api, alice_key, settings, no_engine):
    settings.PLAYGROUND_WEBHOOK_ALLOW_HOSTS = ["127.0.0.1"]
    body = {
        "model": MODEL,
        "prompt": "x",
        "webhook_url": "http://127.0.0.1:9/in",
        "webhook_events_filter": ["completed", "logs", "start", "start"],
    }
    rid = api.post("/v1/generate-text", body, key=alice_key).json()["request_id"]
    assert Job.objects.get(request_id=rid).webhook_events == ["start", "logs", "completed"]


@pytest.mark.django_db(transaction=True)
def test_secret_rotation_and_ownership(api, alice_key, bob_key):
    first = api.get("/v1/webhooks/secret", key=alice_key).json()["secret"]
    assert api.get("/v1/webhooks/secret", key=alice_key).json()["secret"] == first
    assert api.get("/v1/webhooks/secret", key=bob_key).json()["secret"] != first
    rotated = api.post("/v1/webhooks/secret/rotate", {}, key=alice_key).json()["secret"]
    assert rotated != first
    assert api.get("/v1/webhooks/secret", key=alice_key).json()["secret"] == rotated
    assert api.get("/v1/webhooks/secret").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_deliveries_of_another_users_job_are_404(api, alice_key, bob_key, no_engine):
    rid = api.post("/v1/generate-text", {"model": MODEL, "prompt": "x"}, key=alice_key).json()[
        "request_id"
    ]
    assert api.get(f"/v1/requests/{rid}/webhooks", key=alice_key).json()["data"] == []
    assert api.get(f"/v1/requests/{rid}/webhooks", key=bob_key).status_code == 404


def test_signature_matches_the_standard_webhooks_example():
    # The test vector of the Standard Webhooks specification's reference libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    signature = webhooks.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.django_db(transaction=True)
def test_job_page_lists_deliveries(client, api, alice_key, alice, settings, no_engine):
    from playground.models import WebhookDelivery

    settings.PLAYGROUND_WEBHOOK_ALLOW_HOSTS = ["127.0.0.1"]
    body = {"model": MODEL, "prompt": "x", "webhook_url": "http://127.0.0.1:9/in"}
    rid = api.post("/v1/generate-text", body, key=alice_key).json()["request_id"]
    job = Job.objects.get(request_id=rid)
    WebhookDelivery.objects.create(
        job=job,
        message_id="msg_1",
        event="completed",
        url=job.webhook_url,
        attempt=1,
        status_code=500,
        duration_ms=12.3,
    )
    WebhookDelivery.objects.create(
        job=job,
        message_id="msg_1",
        event="completed",
        url=job.webhook_url,
        attempt=2,
        error="connection failed: ConnectError",
    )
    client.force_login(alice)
    page = client.get(f"/jobs/{rid}/").content.decode()
    assert "Webhooks" in page and "http://127.0.0.1:9/in" in page
    assert ">500<" in page and "connection failed: ConnectError" in page


@pytest.mark.django_db(transaction=True)
def test_account_page_shows_the_same_secret(client, api, alice_key, alice, bob):
    secret = api.get("/v1/webhooks/secret", key=alice_key).json()["secret"]
    client.force_login(alice)
    assert secret in client.get("/account/").content.decode()
    client.force_login(bob)
    assert secret not in client.get("/account/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_cancel_sends_completed_with_status_canceled(api, alice_key, settings, receiver, no_engine):
    settings.PLAYGROUND_WEBHOOK_ALLOW_HOSTS = ["127.0.0.1"]
    body = {"model": MODEL, "prompt": "x", "webhook_url": receiver.url + "/cancel"}
    rid = api.post("/v1/generate-text", body, key=alice_key).json()["request_id"]
    api.post(f"/v1/requests/{rid}/cancel", {}, key=alice_key)
    [delivery] = receiver.wait_for("/cancel", lambda seen: len(seen) == 1)
    payload = body_of(delivery)
    assert payload["type"] == "completed" and payload["data"]["status"] == "canceled"
    secret = api.get("/v1/webhooks/secret", key=alice_key).json()["secret"]
    assert webhooks.verify(secret, delivery["headers"], delivery["body"])


# IPv6 addresses that carry a private IPv4 one, which Python's is_global passes (3.11).
EMBEDDED_PRIVATE_IPV4 = [
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::a00:1",  # local-use NAT64
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "::a00:7",  # IPv4-compatible 10.0.0.7
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("address", EMBEDDED_PRIVATE_IPV4)
def test_ipv6_forms_of_private_ipv4_addresses_are_refused(
    api, alice_key, monkeypatch, no_engine, address
):
    for url in (f"https://[{address}]/hook", "https://hooks.example.com/in"):
        fake_dns(monkeypatch, address)
        body = {"model": MODEL, "prompt": "x", "webhook_url": url}
        response = api.post("/v1/generate-text", body, key=alice_key)
        assert response.status_code == 400, (url, response.content)
        assert response.json()["error"]["param"] == "webhook_url"
    assert Job.objects.count() == 0


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"])
def test_ipv6_forms_of_public_ipv4_addresses_are_public(address):
    from playground.inputs import is_public_address

    assert is_public_address(address)


@pytest.mark.django_db(transaction=True)
def test_delivery_connects_to_the_address_that_was_checked(api, alice_key, monkeypatch, no_engine):
    fake_dns(monkeypatch, "93.184.216.34")
    body = {"model": MODEL, "prompt": "x", "webhook_url": "https://hooks.example.com:8443/in?a=1"}
    job = Job.objects.get(
        request_id=api.post("/v1/generate-text", body, key=alice_key).json()["request_id"]
    )
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # the name rebinds after the check

    def getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in next(answers)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    sent = []

    def send(client, request, **kwargs):
        sent.append((client, request))
        return httpx.Response(204, request=request)

    monkeypatch.setattr(httpx.Client, "send", send)
    webhooks.deliver(job.pk, "completed", "msg_pinned")
    [(client, request)] = sent
    assert str(request.url) == "https://93.184.216.34:8443/in?a=1"
    assert request.headers["host"] == "hooks.example.com:8443"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    assert not client.trust_env  # no proxy from the environment either
    assert job.webhook_deliveries.get().status_code == 204
