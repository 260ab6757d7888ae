"""Media models on the existing model page form and over the websocket (CONTRACT §7)."""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from playground.asgi import application
from playground.engine import registry
from playground.engine.runner import run_job
from playground.models import Job

pytestmark = pytest.mark.django_db(transaction=True)
MEDIA_MODELS = ["procedural-image", "animate-video", "espeak-tts", "synth-music"]


@pytest.mark.parametrize("slug", MEDIA_MODELS)
def test_model_page_draws_a_form_from_the_schema(client, slug):
    response = client.get(f"/models/{slug}/")
    assert response.status_code == 200
    assert 'name="prompt"' in response.content.decode()


def test_image_model_runs_from_the_form(client, alice_with_credits):
    client.force_login(alice_with_credits)
    response = client.post(
        "/models/procedural-image/run",
        {"prompt": "a moon over mountains", "width": "128", "height": "128", "steps": "3"},
    )
    job = Job.objects.get()
    assert response.status_code == 302, response.content
    assert job.status == "success" and len(job.output["images"]) == 1
    page = client.get(response["Location"])
    assert page.status_code == 200


def test_music_model_runs_from_the_form(client, alice_with_credits):
    client.force_login(alice_with_credits)
    client.post("/models/synth-music/run", {"prompt": "calm organ", "duration": "2"})
    assert Job.objects.get().output["duration"] == 2


@pytest.fixture
async def _close_thread_connections():
    yield
    await sync_to_async(connections.close_all)()


async def test_websocket_result_links_use_the_clients_host(
    api, alice_key, monkeypatch, _close_thread_connections
):
    def pending():
        monkeypatch.setattr(registry, "enqueue", lambda job: None)
        body = {"model": "procedural-image", "prompt": "sea", "width": 64, "height": 64}
        return api.post("/v1/generate-image", body, key=alice_key).json()["request_id"]

    request_id = await sync_to_async(pending)()
    comm = WebsocketCommunicator(
        application,
        f"/ws/jobs/{request_id}/",
        headers=[(b"authorization", f"Bearer {alice_key}".encode()), (b"host", b"localhost:9")],
    )
    assert (await comm.connect())[0]
    assert (await comm.receive_json_from())["type"] == "snapshot"
    job = await Job.objects.aget(request_id=request_id)
    await sync_to_async(run_job)(job.pk)
    messages = []
    while True:
        output = await comm.receive_output(5)
        if output["type"] == "websocket.close":
            break
        messages.append(json.loads(output["text"]))
    result = messages[-1]
    assert result["type"] == "result" and result["job"]["status"] == "success"
    assert result["job"]["images"][0]["url"].startswith("http://localhost:9/media/")
    assert [m["progress"] for m in messages if m["type"] == "progress"][-1] == 1
    await comm.disconnect()
