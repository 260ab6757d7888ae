"""Media inputs by URL (playground/inputs.py): allowlist, SSRF refusals, size and time limits.

No test sends a packet beyond this machine's loopback: `guard` fails any connection to another
address. 127.0.0.2 stands in for a public web server (the tests count it as public); the fake
names *.test are answered by a patched resolver, everything else by the real one.
"""

import base64
import io
import re
import socket
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from playground import inputs
from playground.models import Job, MediaFile

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC_STAND_IN = "127.0.0.2"
FAKE_DNS = {
    "cdn.test": [PUBLIC_STAND_IN],
    "evil.test": ["127.0.0.1"],
    "six.test": ["::1"],
    "mixed.test": [PUBLIC_STAND_IN, "10.1.2.3"],
    "meta.test": ["169.254.169.254"],
    "mapped.test": ["::ffff:127.0.0.1"],
}


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 90)).save(buffer, "PNG")
    return buffer.getvalue()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: list

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.hits.append((self.server.server_address[0], self.path, self.headers.get("Host")))
        target = self.server.routes.get(self.path)
        if target is None:
            return self._send(404, b"no")
        kind, value = target
        if kind == "redirect":
            self.send_response(302)
            self.send_header("Location", value)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif kind == "slow":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"x" * 100)
                self.wfile.flush()
                time.sleep(0.1)
        elif kind == "stream":  # no Content-Length: the size shows only while reading
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(value)
            self.close_connection = True
        else:
            self._send(200, value)

    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(host: str, routes: dict, hits: list):
    handler = type("H", (Handler,), {"hits": hits})
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    server.routes = routes
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return server


@pytest.fixture
def guard(monkeypatch):
    """Fails a test whose code connects anywhere but loopback; records every connection."""
    connections = []
    real_connect = socket.create_connection

    def create_connection(address, *args, **kwargs):
        connections.append(address)
        if not str(address[0]).startswith("127."):
            raise AssertionError(f"connection to {address} attempted")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return connections


@pytest.fixture
def net(monkeypatch, settings, guard):
    """Two local servers: `site` (the stand-in public host, as cdn.test) and `inside`
    (127.0.0.1, what an attacker wants reached)."""
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in FAKE_DNS:
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port) if ":" not in a else (a, port, 0, 0))
                for a in FAKE_DNS[host]
            ]  # fmt: skip
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    real_public = inputs.is_public_address
    monkeypatch.setattr(
        inputs, "is_public_address", lambda a: a == PUBLIC_STAND_IN or real_public(a)
    )
    # The stand-in speaks plain HTTP; TLS is not what these tests are about.
    monkeypatch.setattr(inputs, "SCHEMES", ("https", "http"))
    settings.PLAYGROUND_INPUT_URL_ALLOWLIST = [
        "cdn.test", "evil.test", "six.test", "mixed.test", "meta.test", "mapped.test",
        "127.0.0.1", "::1", "10.0.0.5", "169.254.169.254", "localhost",
    ]  # fmt: skip
    settings.PLAYGROUND_INPUT_FETCH_TIMEOUT = 1
    hits = []
    inside = serve("127.0.0.1", {"/cat.png": ("body", png())}, hits)
    routes = {
        "/cat.png": ("body", png()),
        "/text": ("body", b"hello, not an image"),
        "/big": ("body", png() + b"\0" * 5000),
        "/stream-big": ("stream", png() + b"\0" * 5000),
        "/slow": ("slow", None),
        "/to-inside": ("redirect", f"http://127.0.0.1:{inside.server_port}/cat.png"),
        "/to-evil": ("redirect", f"http://evil.test:{inside.server_port}/cat.png"),
        "/to-metadata": ("redirect", "http://169.254.169.254/latest/meta-data/"),
        "/to-elsewhere": ("redirect", "https://not-allowed.example/cat.png"),
        "/to-same": ("redirect", "/cat.png"),
        "/loop": ("redirect", "/loop"),
    }
    site = serve(PUBLIC_STAND_IN, routes, hits)
    yield {"site": f"http://cdn.test:{site.server_port}", "inside": inside, "hits": hits}
    for server in (site, inside):
        server.shutdown()
        server.server_close()


def submit(api, key, image):
    return api.post(
        "/v1/generate-video",
        {"model": "animate-video", "prompt": "zoom", "image": image, "num_frames": 8},
        key=key,
    )


def assert_refused(response, words=""):
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == "image"
    assert words in error["message"], error["message"]
    assert Job.objects.count() == 0


def test_allowlisted_url_is_fetched_stored_and_animated(api, alice_key, net):
    response = submit(api, alice_key, net["site"] + "/cat.png")
    assert response.status_code == 200, response.content
    job = Job.objects.get(request_id=response.json()["request_id"])
    stored = MediaFile.objects.get(purpose="input", user=job.user)
    assert job.params["image"] == stored.ref  # the engine never fetches anything
    assert stored.content_type == "image/png"
    # Connected to the checked address, and asked for the name the URL gave.
    host, path, host_header = net["hits"][-1]
    assert (host, path) == (PUBLIC_STAND_IN, "/cat.png")
    assert host_header.startswith("cdn.test:")
    job.refresh_from_db()
    assert job.status == "success"


def test_redirect_within_the_site_is_followed(api, alice_key, net):
    assert submit(api, alice_key, net["site"] + "/to-same").status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/cat.png",
        "https://[::1]/cat.png",
        "https://10.0.0.5/cat.png",
        "https://169.254.169.254/latest/meta-data/",
        "https://localhost/cat.png",
        "https://evil.test/cat.png",  # a name that resolves to loopback
        "https://six.test/cat.png",  # ... to IPv6 loopback
        "https://meta.test/cat.png",  # ... to the cloud metadata address
        "https://mapped.test/cat.png",  # ... to loopback inside an IPv4-mapped IPv6 address
        "https://mixed.test/cat.png",  # one public and one private record
    ],
)
def test_private_and_local_addresses_are_refused_without_connecting(
    api, alice_key, net, guard, url
):
    assert_refused(submit(api, alice_key, url), "private or local address")
    assert guard == [] and net["hits"] == []


@pytest.mark.parametrize(
    "path,words",
    [
        ("/to-inside", "private or local address"),
        ("/to-evil", "private or local address"),
        ("/to-metadata", "private or local address"),
        ("/to-elsewhere", "allowlist"),
        ("/loop", "too many redirects"),
    ],
)
def test_redirects_are_checked_like_the_first_url(api, alice_key, net, guard, path, words):
    assert_refused(submit(api, alice_key, net["site"] + path), words)
    assert all(hit[0] == PUBLIC_STAND_IN for hit in net["hits"])  # 127.0.0.1 never asked
    assert all(address[0] == PUBLIC_STAND_IN for address in guard)


def test_hosts_off_the_allowlist_are_refused_before_any_lookup(api, alice_key, net, guard):
    assert_refused(submit(api, alice_key, "https://example.org/cat.png"), "allowlist")
    assert guard == []


@pytest.mark.parametrize(
    "url",
    ["ftp://cdn.test/cat.png", "file:///etc/passwd", "gopher://cdn.test/", "cdn.test/cat.png"],
)
def test_other_schemes_are_refused(api, alice_key, net, url):
    assert_refused(submit(api, alice_key, url))


def test_https_only_by_default(api, alice_key, net, monkeypatch):
    monkeypatch.setattr(inputs, "SCHEMES", ("https",))
    assert_refused(submit(api, alice_key, net["site"] + "/cat.png"), "only https")


def test_credentials_in_the_url_are_refused(api, alice_key, net):
    assert_refused(submit(api, alice_key, "https://user:pw@cdn.test/cat.png"))


@pytest.mark.parametrize("path", ["/big", "/stream-big"])
def test_size_cap_applies_to_fetched_files(api, alice_key, net, settings, path):
    settings.PLAYGROUND_MAX_UPLOAD_BYTES = 2000
    assert_refused(submit(api, alice_key, net["site"] + path), "too large")


def test_slow_servers_are_cut_off(api, alice_key, net):
    started = time.monotonic()
    assert_refused(submit(api, alice_key, net["site"] + "/slow"), "too long")
    assert time.monotonic() - started < 3


def test_fetched_content_must_be_an_image(api, alice_key, net):
    assert_refused(submit(api, alice_key, net["site"] + "/text"), "not an image")


def test_data_uris(api, alice_key, settings):
    good = "data:image/png;base64," + base64.b64encode(png()).decode()
    assert submit(api, alice_key, good).status_code == 200
    Job.objects.all().delete()
    assert_refused(submit(api, alice_key, "data:image/png,rawbytes"), "base64")
    assert_refused(submit(api, alice_key, "data:image/png;base64,!!!"), "base64")
    settings.PLAYGROUND_MAX_UPLOAD_BYTES = 100
    assert_refused(submit(api, alice_key, good), "too large")


def test_expired_own_link_is_refused(api, client, alice_key, alice):
    from playground import media

    stored = media.save_file(alice, png(), "a.png", "image/png", "input")
    expired = "http://testserver" + media.signed_path(stored.ref, alice.pk, int(time.time()) - 1)
    assert_refused(submit(api, alice_key, expired), "expired")
    tampered = expired.replace("sig=", "sig=x")
    assert_refused(submit(api, alice_key, tampered), "not a valid link")
    for expires in ("\u00b2", "9" * 5000):
        malformed = re.sub(r"expires=\d+", f"expires={expires}", expired)
        assert_refused(submit(api, alice_key, malformed), "not a valid link")


def test_a_refused_submit_keeps_no_input_file(api, alice_key, alice, settings, monkeypatch):
    from accounts import keys
    from accounts.models import ApiKey
    from playground import media
    from playground.engine import registry

    monkeypatch.setattr(registry, "enqueue", lambda job: None)  # jobs stay pending
    stored_names = []
    original = media.save_file

    def save_file(*args, **kwargs):
        made = original(*args, **kwargs)
        stored_names.append(made.name)
        return made

    monkeypatch.setattr(media, "save_file", save_file)
    own = original(alice, png(), "mine.png", "image/png", "input")
    own_link = "http://testserver" + media.signed_path(own.ref, alice.pk)
    data_uri = "data:image/png;base64," + base64.b64encode(png()).decode()
    body = {"model": "animate-video", "prompt": "zoom", "image": data_uri, "num_frames": 8}
    idem = {"HTTP_IDEMPOTENCY_KEY": "once"}
    assert api.post("/v1/generate-video", body, key=alice_key, **idem).status_code == 200
    kept = set(MediaFile.objects.values_list("pk", flat=True))
    # An idempotent replay, a 429 and a 402 each stored the image again before they were refused.
    assert api.post("/v1/generate-video", body, key=alice_key, **idem).status_code == 200
    settings.PLAYGROUND_CONCURRENT_JOBS = {"free": 1, "pro": 1, "unlimited": 1}
    assert api.post("/v1/generate-video", body, key=alice_key).status_code == 429
    settings.PLAYGROUND_CONCURRENT_JOBS = {}
    keys.update(ApiKey.objects.get(prefix=alice_key[:12]), spend_cap=Decimal(0))
    assert api.post("/v1/generate-video", body, key=alice_key).status_code == 402
    # The client's own file, named in a refused submit, is not touched.
    assert submit(api, alice_key, own_link).status_code == 402
    assert set(MediaFile.objects.values_list("pk", flat=True)) == kept
    assert len(stored_names) == 4  # the first submit, then the replay, the 429 and the 402
    for name in stored_names[1:]:
        assert not media.storage().exists(name)
    assert media.storage().exists(stored_names[0]) and media.storage().exists(own.name)
    assert Job.objects.count() == 1


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1 (is_global in Python 3.11)
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b:1::a00:1",  # local-use NAT64
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "::7f00:1",  # IPv4-compatible 127.0.0.1
    ],
)
def test_ipv6_forms_of_private_ipv4_addresses_are_refused(
    api, alice_key, net, guard, settings, monkeypatch, address
):
    monkeypatch.setitem(FAKE_DNS, "nat.test", [address])
    allowlist = [*settings.PLAYGROUND_INPUT_URL_ALLOWLIST, "nat.test", address]
    settings.PLAYGROUND_INPUT_URL_ALLOWLIST = allowlist
    for url in ("https://nat.test/cat.png", f"https://[{address}]/cat.png"):
        assert_refused(submit(api, alice_key, url), "private or local address")
    assert guard == [] and net["hits"] == []
