"""Stored media and its signed, expiring links (playground/media.py)."""

import os
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import transaction

from playground import media
from playground.models import MediaFile

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stored(alice):
    return media.save_file(alice, b"\x89PNG\r\n\x1a\nhello", "cat.png", "image/png", "input")


def link(media_file, expires=None):
    return media.signed_path(media_file.ref, media_file.user_id, expires)


def test_signed_link_serves_the_file_without_a_key(client, stored):
    response = client.get(link(stored))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"\x89PNG\r\n\x1a\nhello"
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cache-Control"].startswith("private, max-age=")


def test_head_gives_the_headers_only(client, stored):
    response = client.head(link(stored))
    assert response.status_code == 200
    assert response["Content-Length"] == str(stored.bytes)
    assert client.post(link(stored)).status_code == 405


def test_expired_link_is_403(client, stored):
    past = int(time.time()) - 5
    response = client.get(link(stored, expires=past))
    assert response.status_code == 403
    assert b"expired" in response.content


def test_link_expires_after_the_configured_lifetime(client, stored, settings):
    settings.PLAYGROUND_MEDIA_URL_SECONDS = 1
    path = link(stored)
    assert client.get(path).status_code == 200
    expires = int(parse_qs(urlsplit(path).query)["expires"][0])
    assert expires - time.time() <= 2
    time.sleep(max(0, expires - time.time()) + 1.1)
    assert client.get(path).status_code == 403


@pytest.mark.parametrize("part", ["sig", "expires"])
def test_tampered_link_is_404(client, stored, part):
    path = link(stored)
    query = parse_qs(urlsplit(path).query)
    if part == "sig":
        query["sig"] = ["A" + query["sig"][0][1:]]
    else:
        query["expires"] = [str(int(query["expires"][0]) + 3600)]
    tampered = f"{urlsplit(path).path}?expires={query['expires'][0]}&sig={query['sig'][0]}"
    assert client.get(tampered).status_code == 404
    assert client.get(urlsplit(path).path).status_code == 404  # no signature at all


@pytest.mark.parametrize("expires", ["\u00b2", "\u0661\u0662", "9" * 5000, "-5", "+5", " 5"])
def test_malformed_expiry_is_404_like_a_tampered_link(client, stored, expires):
    sig = parse_qs(urlsplit(link(stored)).query)["sig"][0]
    response = client.get(f"/media/{stored.public_id}/cat.png", {"expires": expires, "sig": sig})
    assert response.status_code == 404


def test_another_files_signature_does_not_open_this_one(client, stored, alice, bob):
    other = media.save_file(alice, b"GIF89a-other", "other.gif", "image/gif", "input")
    sig_query = urlsplit(link(other)).query
    assert client.get(f"/media/{stored.public_id}/cat.png?{sig_query}").status_code == 404
    # The owner is signed too: the same file moved to Bob would need a new link.
    path = link(stored)
    MediaFile.objects.filter(pk=stored.pk).update(user=bob)
    assert client.get(path).status_code == 404


def test_unknown_file_is_404(client, stored):
    path = link(stored).replace(str(stored.public_id), "00000000-0000-0000-0000-000000000000")
    assert client.get(path).status_code == 404


def test_byte_ranges_for_seeking(client, stored):
    response = client.get(link(stored), HTTP_RANGE="bytes=8-10")
    assert response.status_code == 206
    assert response.content == b"hel"
    assert response["Content-Range"] == "bytes 8-10/13"
    assert client.get(link(stored), HTTP_RANGE="bytes=-2").content == b"lo"
    assert client.get(link(stored), HTTP_RANGE="bytes=50-").status_code == 416


def test_render_output_makes_absolute_links_on_the_requests_host(client, stored):
    output = {"images": [{"file": stored.ref, "width": 4}], "seed": 3, "audio_file": stored.ref}
    doc = media.render_output(output, stored.user_id, "https://play.example:8443")
    url = doc["images"][0]["url"]
    assert url.startswith(f"https://play.example:8443/media/{stored.public_id}/cat.png?expires=")
    assert doc["images"][0]["width"] == 4 and "file" not in doc["images"][0]
    assert doc["audio_url"].startswith("https://play.example:8443/media/")
    assert "audio_file" not in doc and doc["seed"] == 3
    # Documents made moments apart carry the same links.
    assert media.render_output(output, stored.user_id, "https://play.example:8443") == doc
    assert client.get(urlsplit(url).path + "?" + urlsplit(url).query).status_code == 200


def test_deleting_the_row_deletes_the_stored_bytes(stored):
    name = stored.name
    assert media.storage().exists(name)
    with transaction.atomic():
        stored.delete()
    assert not media.storage().exists(name)


def test_s3_storage_is_configured_from_the_environment():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "playground.settings",
        "PLAYGROUND_S3_BUCKET": "pg-media",
        "PLAYGROUND_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "PLAYGROUND_S3_REGION": "eu-west-1",
        "PLAYGROUND_S3_PREFIX": "site-a",
        "PLAYGROUND_S3_ADDRESSING_STYLE": "path",
    }
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    code = (
        "import django; django.setup();"
        "from django.core.files.storage import storages; s = storages['default'];"
        "print(type(s).__name__, s.bucket_name, s.endpoint_url, s.region_name, s.location,"
        " s.addressing_style, s.default_acl, s.file_overwrite)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "S3Storage",
        "pg-media",
        "http://127.0.0.1:9000",
        "eu-west-1",
        "site-a",
        "path",
        "private",
        "False",
    ]
