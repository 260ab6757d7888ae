"""GET /v1/usage: the account's finished jobs per day and model."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from playground.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def run(api, key, model="trigram-pydoc", **body):
    body = {"model": model, "prompt": "x", "max_tokens": 3, "wait_for_result": True, **body}
    return api.post("/v1/generate-text", body, key=key).json()


def test_usage_per_day_and_model(api, alice_key, bob_key):
    docs = [run(api, alice_key) for _ in range(3)]
    run(api, bob_key)  # another account: not counted
    old = Job.objects.filter(request_id=docs[0]["request_id"])
    old.update(created=timezone.now() - timedelta(days=2))
    body = api.get("/v1/usage", key=alice_key).json()
    assert body["object"] == "usage"
    assert [(d["model"], d["requests"]) for d in body["data"]] == [
        ("trigram-pydoc", 1),
        ("trigram-pydoc", 2),
    ]
    assert body["data"][0]["date"] < body["data"][1]["date"]
    assert body["total"]["requests"] == 3
    assert Decimal(body["total"]["cost"]) == sum(Decimal(d["cost"]) for d in docs)
    assert body["data"][1]["completion_tokens"] == sum(
        d["usage"]["completion_tokens"] for d in docs[1:]
    )


def test_usage_date_range_and_bad_input(api, alice_key):
    run(api, alice_key)
    today = timezone.now().date()
    yesterday = (today - timedelta(days=1)).isoformat()
    assert api.get(f"/v1/usage?end={yesterday}", key=alice_key).json()["data"] == []
    assert api.get(f"/v1/usage?start={today}&end={today}", key=alice_key).json()["data"]
    bad = api.get("/v1/usage?start=yesterday", key=alice_key)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "start"
    backwards = api.get(f"/v1/usage?start={today}&end={yesterday}", key=alice_key)
    assert backwards.status_code == 400
    assert api.get("/v1/usage").status_code == 401


def test_usage_window_before_year_one_is_400_naming_end(api, alice_key):
    for end in ("0001-01-01", "0001-01-29"):
        response = api.get(f"/v1/usage?end={end}", key=alice_key)
        assert response.status_code == 400, response.content
        assert response.json()["error"]["param"] == "end"
    # The earliest window that fits, and an explicit start, still answer.
    assert api.get("/v1/usage?end=0001-01-30", key=alice_key).json()["start"] == "0001-01-01"
    both = api.get("/v1/usage?start=0001-01-01&end=0001-01-01", key=alice_key)
    assert both.status_code == 200 and both.json()["data"] == []


def test_usage_counts_images_and_seconds(api, alice_key):
    image = api.post(
        "/v1/generate-image",
        {
            "model": "procedural-image",
            "prompt": "red sun",
            "num_images": 2,
            "width": 256,
            "height": 256,
            "steps": 2,
            "wait_for_result": True,
        },
        key=alice_key,
    ).json()
    music = api.post(
        "/v1/generate-audio",
        {"model": "synth-music", "prompt": "calm piano", "duration": 3, "wait_for_result": True},
        key=alice_key,
    ).json()
    assert image["status"] == music["status"] == "success", (image, music)
    rows = {d["model"]: d for d in api.get("/v1/usage", key=alice_key).json()["data"]}
    assert rows["procedural-image"]["images"] == 2
    assert rows["synth-music"]["seconds"] == pytest.approx(3, abs=0.05)
    assert rows["synth-music"]["images"] == 0
