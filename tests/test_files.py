"""POST/GET/DELETE /v1/files (CONTRACT §4): uploads, sniffed, capped, private."""

import io
import json
import os
import time
from urllib.parse import urlsplit

import pytest
from PIL import Image

from playground import media
from playground.models import MediaFile

pytestmark = pytest.mark.django_db(transaction=True)


def png_bytes(size=(32, 24), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG")
    return buffer.getvalue()


def upload(client, key, data: bytes, name="picture.png", purpose="input"):
    body = {"file": io.BytesIO(data), "purpose": purpose}
    body["file"].name = name
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    return client.post("/v1/files", body, **headers)


def test_upload_returns_the_contract_document_and_a_working_link(client, alice_key):
    data = png_bytes()
    before = int(time.time())
    response = upload(client, alice_key, data)
    assert response.status_code == 200, response.content
    doc = response.json()
    assert set(doc) >= {"id", "url", "bytes", "purpose", "created"}
    assert doc["bytes"] == len(data) and doc["purpose"] == "input"
    assert doc["content_type"] == "image/png" and doc["filename"] == "picture.png"
    assert doc["created"] >= before
    url = urlsplit(doc["url"])
    assert url.scheme == "http" and url.netloc == "testserver"
    fetched = client.get(f"{url.path}?{url.query}")  # no key needed
    assert b"".join(fetched.streaming_content) == data


def test_type_comes_from_the_content_not_the_name(client, alice_key):
    doc = upload(client, alice_key, png_bytes(), name="notes.txt").json()
    assert doc["content_type"] == "image/png"
    response = upload(client, alice_key, b"<html><script>alert(1)</script>", name="cat.png")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file"
    assert MediaFile.objects.count() == 1


def test_damaged_image_is_refused(client, alice_key):
    buffer = io.BytesIO()
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(buffer, "PNG")
    data = buffer.getvalue()[: len(buffer.getvalue()) // 2]  # a PNG cut short
    response = upload(client, alice_key, data)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_file"


def test_decompression_bomb_is_refused_before_decoding(client, alice_key):
    bomb = png_bytes(size=(5000, 5000), mode="1")  # tiny file, 25 megapixels
    assert len(bomb) < 100_000
    response = upload(client, alice_key, bomb)
    assert response.status_code == 400
    assert "pixels" in response.json()["error"]["message"]
    assert MediaFile.objects.count() == 0


def test_upload_over_the_limit_is_413(client, alice_key, settings):
    settings.PLAYGROUND_MAX_UPLOAD_BYTES = 1000
    response = upload(client, alice_key, png_bytes(size=(400, 400), mode="RGB") + b"x" * 2000)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    assert MediaFile.objects.count() == 0


def test_upload_far_over_the_limit_is_refused_before_reading(client, alice_key, settings):
    settings.PLAYGROUND_MAX_UPLOAD_BYTES = 1000
    response = client.post(
        "/v1/files",
        {"file": io.BytesIO(b"x" * 200_000), "purpose": "input"},
        HTTP_AUTHORIZATION=f"Bearer {alice_key}",
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_fine_tune_files_are_json_lines(client, alice_key):
    good = b'{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "d"}\n'
    doc = upload(client, alice_key, good, name="train.jsonl", purpose="fine-tune").json()
    assert doc["purpose"] == "fine-tune" and doc["content_type"] == "application/jsonl"
    bad = upload(client, alice_key, b"not json\n", name="train.jsonl", purpose="fine-tune")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "file"


@pytest.mark.parametrize("purpose", ["", "output", "training"])
def test_bad_purpose_is_400(client, alice_key, purpose):
    response = upload(client, alice_key, png_bytes(), purpose=purpose)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "purpose"


def test_missing_file_is_400(client, alice_key):
    response = client.post(
        "/v1/files", {"purpose": "input"}, HTTP_AUTHORIZATION=f"Bearer {alice_key}"
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file"


def test_no_key_is_401(client):
    assert upload(client, None, png_bytes()).status_code == 401
    assert client.get("/v1/files").status_code == 401


def test_list_shows_only_the_callers_uploads(client, api, alice_key, bob_key):
    first = upload(client, alice_key, png_bytes()).json()
    second = upload(client, alice_key, png_bytes(size=(8, 8))).json()
    upload(client, bob_key, png_bytes())
    listing = api.get("/v1/files", key=alice_key).json()
    assert [f["id"] for f in listing["data"]] == [second["id"], first["id"]]
    assert listing["has_more"] is False
    assert api.get("/v1/files?purpose=fine-tune", key=alice_key).json()["data"] == []
    assert api.get("/v1/files?limit=1", key=alice_key).json()["has_more"] is True
    assert api.get(f"/v1/files/{first['id']}", key=alice_key).json()["id"] == first["id"]


def test_delete_removes_row_and_bytes_and_another_users_file_is_404(
    client, api, alice_key, bob_key
):
    doc = upload(client, alice_key, png_bytes()).json()
    stored = MediaFile.objects.get(public_id=doc["id"])
    for file_id in (doc["id"], "00000000-0000-0000-0000-000000000000", "nope"):
        response = client.delete(f"/v1/files/{file_id}", HTTP_AUTHORIZATION=f"Bearer {bob_key}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "file_not_found"
        assert api.get(f"/v1/files/{file_id}", key=bob_key).status_code == 404
    assert MediaFile.objects.filter(pk=stored.pk).exists()

    response = client.delete(f"/v1/files/{doc['id']}", HTTP_AUTHORIZATION=f"Bearer {alice_key}")
    assert response.json() == {"id": doc["id"], "object": "file", "deleted": True}
    assert not MediaFile.objects.filter(pk=stored.pk).exists()
    assert not media.storage().exists(stored.name)
    url = urlsplit(doc["url"])
    assert client.get(f"{url.path}?{url.query}").status_code == 404


def test_an_upload_is_a_media_input_only_for_its_owner(client, api, alice_key, bob_key):
    doc = upload(client, alice_key, png_bytes()).json()
    body = {"model": "animate-video", "prompt": "zoom", "num_frames": 8}
    for image in (doc["url"], doc["id"]):
        response = api.post("/v1/generate-video", {**body, "image": image}, key=bob_key)
        assert response.status_code == 400, image
        assert response.json()["error"]["param"] == "image"
    response = api.post("/v1/generate-video", {**body, "image": doc["id"]}, key=alice_key)
    assert response.status_code == 200


def test_a_text_file_is_not_an_image_input(client, api, alice_key):
    doc = upload(client, alice_key, b'{"a": 1}\n', name="d.jsonl", purpose="fine-tune").json()
    response = api.post(
        "/v1/generate-video",
        {"model": "animate-video", "prompt": "zoom", "image": doc["url"]},
        key=alice_key,
    )
    assert response.status_code == 400
    assert "application/jsonl" in json.dumps(response.json())
