"""Page weight and server time of every playground page, against a live embedded site.

For each page: the first load's bytes, uncompressed (the HTML plus every stylesheet and script it
links; the target is under 150 KB), and the time to answer a GET over 127.0.0.1 (p50 and p95 of
--n requests after warm-up; the model page's target is a p50 under 30 ms). Logged in as a user
with one finished job, as a person who uses the site would be.

Then the same model page in process (Django's test client, no network), with and without
allauth's per-request session-activity write (USERSESSIONS_TRACK_ACTIVITY), side by side: that
one UPDATE and its COMMIT is a large share of every logged-in page's time on SQLite.

    .venv/bin/python bench/pages.py [--n 50]
"""

import argparse
import re
import secrets
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import MODEL, Site  # noqa: E402

ASSET_RE = re.compile(r'<(?:link[^>]+rel="stylesheet"[^>]+href|script[^>]+src)="([^"]+)"')


def log_in(client: httpx.Client, email: str, password: str) -> None:
    page = client.get("/accounts/login/").text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response = client.post(
        "/accounts/login/",
        data={"login": email, "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": str(client.base_url) + "/accounts/login/"},
    )
    assert response.status_code in (200, 302) and "sessionid" in client.cookies, response.text


def weight(client: httpx.Client, html: str) -> tuple[int, int]:
    """(HTML bytes, bytes of the linked CSS and JS), uncompressed."""
    assets = 0
    for url in set(ASSET_RE.findall(html)):
        assets += len(client.get(url, headers={"Accept-Encoding": "identity"}).content)
    return len(html.encode()), assets


def in_process(n: int) -> None:
    import os
    import tempfile

    os.environ["DJANGO_SETTINGS_MODULE"] = "playground.settings"
    os.environ["PLAYGROUND_DATA_DIR"] = tempfile.mkdtemp(prefix="bench-pages-")
    os.environ["PLAYGROUND_EMBEDDED_WORKER"] = "0"
    os.environ["ALLOWED_HOSTS"] = "testserver"
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client

    from accounts.models import User

    call_command("migrate", verbosity=0)
    client = Client()
    client.force_login(User.objects.create_user(email="bench@example.com", password="x"))
    path = f"/models/{MODEL}/"
    rows = []
    for track in (True, False) * 3:  # alternated, so machine noise hits both alike
        settings.USERSESSIONS_TRACK_ACTIVITY = track
        for _ in range(5):
            client.get(path)
        times = []
        for _ in range(n):
            start = time.perf_counter()
            client.get(path)
            times.append((time.perf_counter() - start) * 1000)
        rows.append((track, statistics.median(times)))
    for track in (True, False):
        p50 = statistics.median(t for k, t in rows if k == track)
        label = "with" if track else "without"
        print(f"model page in process, {label} the session-activity write: p50 {p50:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="timed GETs per page")
    args = parser.parse_args()

    site = Site("embedded")
    try:
        email = f"pages-{secrets.token_hex(4)}@example.com"
        password = "Bench-pw-" + secrets.token_hex(6)
        site.live.manage("users", "add", email, "--password", password, "--credits", "100")
        key = site.live.manage("apikey", "create", email).stdout.strip()
        body = {"model": MODEL, "prompt": "The class", "max_tokens": 32, "wait_for_result": True}
        job = httpx.post(
            site.base_url + "/v1/generate-text",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ).json()["request_id"]
        pages = {
            # A bare JSON view: what the server and the network cost with no page at all.
            "healthz": "/healthz",
            "dashboard": "/",
            "catalogue": "/models/",
            "model": f"/models/{MODEL}/",
            "chat": f"/models/{MODEL}/chat",
            "docs": f"/models/{MODEL}/docs",
            "compare": "/compare/",
            "jobs": "/jobs/",
            "job": f"/jobs/{job}/",
        }
        with httpx.Client(base_url=site.base_url, timeout=30) as client:
            log_in(client, email, password)
            print(f"{'page':<10} {'html KB':>8} {'css+js KB':>10} {'total KB':>9}"
                  f" {'p50 ms':>7} {'p95 ms':>7}")  # fmt: skip
            for name, path in pages.items():
                for _ in range(5):
                    client.get(path)
                times = []
                for _ in range(args.n):
                    start = time.perf_counter()
                    response = client.get(path)
                    times.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200, (path, response.status_code)
                html, assets = weight(client, response.text)
                p50 = statistics.median(times)
                p95 = statistics.quantiles(times, n=20)[18]
                print(
                    f"{name:<10} {html / 1024:>8.1f} {assets / 1024:>10.1f}"
                    f" {(html + assets) / 1024:>9.1f} {p50:>7.1f} {p95:>7.1f}"
                )
    finally:
        site.close()
    in_process(args.n)


if __name__ == "__main__":
    main()
