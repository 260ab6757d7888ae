"""`models add-openai --modality image`: an upstream's /images/generations, stored and billed
per image, against the local fake OpenAI-compatible server."""

import io
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from PIL import Image

from billing import ledger
from playground.models import AIModel, MediaFile

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def upstream_image_model(fake_openai, monkeypatch):
    monkeypatch.setenv("IMG_KEY", "sk-upstream-secret")
    call_command(
        "models", "add-openai", "dall-e-local", "--base-url", fake_openai.base_url,
        "--upstream-model", "fake-image-1", "--modality", "image", "--per-image", "0.04",
        "--api-key-env", "IMG_KEY",
    )  # fmt: skip
    return AIModel.objects.get(slug="dall-e-local")


def generate(api, key, **body):
    return api.post(
        "/v1/generate-image",
        {"model": "dall-e-local", "prompt": "a lighthouse", "wait_for_result": True, **body},
        key=key,
    )


def fetch_image(client, url):
    parts = urlsplit(url)
    response = client.get(f"{parts.path}?{parts.query}")
    assert response.status_code == 200
    return Image.open(io.BytesIO(b"".join(response.streaming_content)))


def test_model_is_listed_as_an_image_model(client, upstream_image_model):
    doc = client.get("/v1/models/dall-e-local").json()
    assert doc["modality"] == "image" and doc["endpoint"] == "/v1/generate-image"
    assert doc["pricing"]["per_image"] == "0.04"
    assert set(doc["parameters"]["properties"]) >= {"prompt", "width", "height", "num_images"}
    assert "steps" not in doc["parameters"]["properties"]  # built-in only


@pytest.mark.parametrize("answer", ["b64_json", "url"])
def test_images_are_stored_here_and_billed_per_image(
    api, client, alice_key, alice_with_credits, fake_openai, upstream_image_model, answer
):
    fake_openai.image_response = answer
    response = generate(api, alice_key, num_images=2, width=256, height=128, seed=9)
    doc = response.json()
    assert response.status_code == 200 and doc["status"] == "success", doc
    assert len(doc["images"]) == 2
    for item in doc["images"]:
        assert urlsplit(item["url"]).netloc == "testserver"  # ours, not the upstream's
        picture = fetch_image(client, item["url"])
        assert picture.format == "PNG" and picture.size == (256, 128)
    assert doc["cost"] == "0.08"
    assert ledger.balances(alice_with_credits) == (Decimal("9.92"), Decimal("9.92"))
    sent = next(r for r in fake_openai.requests if r.path == "/v1/images/generations")
    assert sent.json == {
        "model": "fake-image-1", "prompt": "a lighthouse", "n": 2, "size": "256x128",
        "response_format": "b64_json", "seed": 9,
    }  # fmt: skip
    assert sent.headers["authorization"] == "Bearer sk-upstream-secret"
    assert MediaFile.objects.filter(purpose="output").count() == 2


def test_webp_is_converted_when_the_upstream_sends_png(
    api, client, alice_key, upstream_image_model
):
    doc = generate(api, alice_key, output_format="webp", width=64, height=64).json()
    assert fetch_image(client, doc["images"][0]["url"]).format == "WEBP"


def test_upstream_failure_fails_the_job_and_charges_nothing(
    api, alice_key, alice_with_credits, fake_openai, upstream_image_model
):
    fake_openai.mode = "error401"
    doc = generate(api, alice_key).json()
    assert doc["status"] == "failed" and doc["error"]["code"] == "upstream_error"
    assert "sk-upstream-secret" not in doc["error"]["message"]
    assert doc["cost"] == "0"
    assert ledger.balances(alice_with_credits) == (Decimal("10"), Decimal("10"))


def test_hold_is_per_image(api, alice_key, alice_with_credits, upstream_image_model, monkeypatch):
    from playground.engine import registry
    from playground.models import Job

    monkeypatch.setattr(registry, "enqueue", lambda job: None)
    rid = api.post(
        "/v1/generate-image",
        {"model": "dall-e-local", "prompt": "x", "num_images": 3},
        key=alice_key,
    ).json()["request_id"]
    assert Job.objects.get(request_id=rid).hold_amount == Decimal("0.12")


def test_cancel_while_the_upstream_thinks_ends_the_job_at_once(
    api, alice_key, alice_with_credits, fake_openai, upstream_image_model, monkeypatch
):
    import threading
    import time

    from playground import jobs
    from playground.engine import registry, runner
    from playground.models import Job

    fake_openai.mode = "hang"
    monkeypatch.setattr(registry, "enqueue", lambda job: None)
    rid = api.post(
        "/v1/generate-image", {"model": "dall-e-local", "prompt": "x"}, key=alice_key
    ).json()["request_id"]
    job = Job.objects.get(request_id=rid)

    def cancel():
        from django.db import connection

        try:
            jobs.cancel_job(Job.objects.get(pk=job.pk))
        finally:
            connection.close()  # this thread's own connection

    canceller = threading.Timer(0.5, cancel)
    canceller.start()
    started = time.monotonic()
    runner.run_job(job.pk)  # the upstream never answers; the cancel must end this
    assert time.monotonic() - started < 5
    canceller.join()
    job.refresh_from_db()
    assert job.status == "canceled" and job.cost == 0
    assert ledger.balances(alice_with_credits) == (Decimal("10"), Decimal("10"))
