"""The playground pages in process: catalogue, model form and preview, jobs, share links,
docs page, chat and compare submits, dashboard and its user websocket."""

import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.template.loader import render_to_string
from django.test import Client
from django.utils import timezone

from accounts import keys
from billing import ledger
from playground import catalogue
from playground.engine import registry
from playground.forms import form_fields, parse_form
from playground.models import AIModel, Job

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "trigram-pydoc"
REAL_KEY = re.compile(r"pgk_[A-Za-z0-9_-]{20,}")


def run(client, slug=MODEL, **values):
    values = {"prompt": "The module", "max_tokens": "8", **values}
    client.post(f"/models/{slug}/run", values)
    return Job.objects.order_by("-id").first()


def paid_model(slug="pricey", per_1k_output="5", modality="text"):
    return AIModel.objects.create(
        slug=slug,
        name=f"{slug} model",
        description="An upstream model",
        modality=modality,
        backend="openai",
        per_1k_output=Decimal(per_1k_output),
    )


# -- Catalogue


def test_catalogue_search_and_filters(client):
    paid_model("pricey-chat", "5")
    html = client.get("/models/?q=trigram").content.decode()
    assert "/models/trigram-pydoc/" in html and "/models/pricey-chat/" not in html
    html = client.get("/models/?modality=embedding").content.decode()
    assert "/models/hash-embed/" in html and "/models/trigram-pydoc/" not in html
    html = client.get("/models/?price=0.1").content.decode()
    assert "/models/trigram-pydoc/" in html and "/models/pricey-chat/" not in html
    html = client.get("/models/?price=1").content.decode()
    assert "/models/pricey-chat/" not in html
    assert "/models/pricey-chat/" in client.get("/models/").content.decode()
    assert "No model matches" in client.get("/models/?q=zzzz").content.decode()


def test_catalogue_htmx_returns_only_the_cards(client):
    response = client.get("/models/?q=hash", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert "<html" not in html and 'id="cards"' in html and "/models/hash-embed/" in html


def test_catalogue_cards_show_price_and_average_run_time_of_successes(client, alice):
    model = catalogue.get_model(MODEL)
    now = timezone.now()
    for seconds, status in ((1.0, "success"), (3.0, "success"), (100.0, "failed")):
        Job.objects.create(
            user=alice,
            model=model,
            model_slug=MODEL,
            modality="text",
            status=status,
            started_at=now,
            finished_at=now + timedelta(seconds=seconds),
        )
    assert catalogue.run_times()[model.pk] == (2.0, 2)
    html = client.get("/models/?q=trigram").content.decode()
    card = re.search(r'href="/models/trigram-pydoc/".*?</a>', html, re.S).group(0)
    assert "avg 2.0 s · 2 runs" in card
    assert "<strong>0.02</strong> credits / 1K output tokens" in card
    assert "no runs yet" in client.get("/models/?q=hash").content.decode()


# -- The model page's form


def test_form_controls_follow_the_schema():
    schema = {
        "properties": {
            "prompt": {"type": "string", "description": "What to draw"},
            "steps": {"type": "integer", "minimum": 1, "maximum": 50, "default": 20},
            "guidance": {"type": "number", "minimum": 0, "default": 7.5},
            "style": {"type": "string", "enum": ["photo", "anime"], "default": "photo"},
            "hd": {"type": "boolean", "default": False},
            "seed": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
            "image_url": {"type": "string", "format": "uri"},
            "audio": {"type": "string", "contentMediaType": "audio/wav"},
        },
        "required": ["prompt"],
    }
    fields = {f["name"]: f for f in form_fields(schema)}
    widgets = {name: f["widget"] for name, f in fields.items()}
    assert widgets == {
        "prompt": "textarea",
        "steps": "range",
        "guidance": "number",
        "style": "select",
        "hd": "checkbox",
        "seed": "seed",
        "image_url": "media",
        "audio": "media",
    }
    assert fields["image_url"]["accept"] == "image/*"
    assert fields["audio"]["accept"] == "audio/wav"
    assert fields["steps"]["value"] == 20 and fields["style"]["choices"] == ["photo", "anime"]
    assert fields["prompt"]["required"] and not fields["prompt"]["advanced"]
    parsed = parse_form(schema, {"prompt": "x", "steps": "3", "hd": "on", "style": "anime"})
    assert parsed == {"prompt": "x", "steps": 3, "hd": True, "style": "anime"}


def test_model_page_draws_slider_select_dice_and_defaults(client):
    html = client.get(f"/models/{MODEL}/").content.decode()
    assert 'type="range" data-range-for="temperature"' in html
    assert 'data-range-for="max_tokens"' in html and 'max="1024"' in html
    assert 'data-dice="id_seed"' in html
    assert "Default: 128." in html
    assert "Sampling temperature; 0 is greedy" in html  # help text from the schema
    embed = client.get("/models/hash-embed/").content.decode()
    assert '<select id="id_encoding_format"' in embed and '<option value="base64"' in embed


def test_preview_estimates_validates_and_writes_code(client):
    response = client.post(
        f"/models/{MODEL}/preview",
        {"prompt": "The class", "max_tokens": "500", "temperature": "0.5"},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    # 2 prompt tokens at 0.01/1K + 500 output tokens at 0.02/1K: the worst-case hold.
    assert 'data-field="estimate">0.01002<' in html
    assert "&quot;max_tokens&quot;: 500" in html and "&quot;temperature&quot;: 0.5" in html
    assert "$PLAYGROUND_API_KEY" in html and not REAL_KEY.search(html)
    assert "client.completions.create" in html  # the openai SDK for a prompt
    bad = client.post(
        f"/models/{MODEL}/preview", {"prompt": "x", "max_tokens": "5000"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    error = re.search(r'id="err-max_tokens"[^>]*>([^<]*)<', bad).group(1)
    assert "less than or equal to 1024" in error
    assert "Fix the form" in bad
    both = client.post(
        f"/models/{MODEL}/preview",
        {"prompt": "x", "messages": '[{"role": "user", "content": "hi"}]'},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert re.search(r'id="form-error"[^>]*>Give a prompt, or messages', both)


def test_preview_of_messages_uses_the_chat_sdk_call(client):
    html = client.post(
        f"/models/{MODEL}/preview",
        {"messages": '[{"role": "user", "content": "hi"}]'},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert "client.chat.completions.create" in html


def test_rerun_prefills_the_form_and_is_404_for_another_user(client, alice_with_credits, bob):
    client.force_login(alice_with_credits)
    job = run(client, prompt="The function returns", max_tokens="17", seed="99")
    html = client.get(f"/models/{MODEL}/?rerun={job.request_id}").content.decode()
    assert "The function returns</textarea>" in html
    assert 'id="id_max_tokens" name="max_tokens" value="17"' in html
    assert 'value="99"' in html
    client.force_login(bob)
    assert client.get(f"/models/{MODEL}/?rerun={job.request_id}").status_code == 404


# -- Jobs


def test_jobs_history_filters_and_paginates_own_jobs_only(client, alice_with_credits, bob):
    model = catalogue.get_model(MODEL)
    for i in range(23):
        Job.objects.create(
            user=alice_with_credits,
            model=model,
            model_slug=MODEL,
            modality="text",
            status="failed" if i % 2 else "success",
        )
    Job.objects.create(user=bob, model=model, model_slug="bobs-model", modality="text")
    client.force_login(alice_with_credits)
    html = client.get("/jobs/").content.decode()
    assert html.count('<tr>\n    <td><span class="badge') == 20
    assert "Page 1 of 2" in html and "bobs-model" not in html
    page2 = client.get("/jobs/?page=2").content.decode()
    assert page2.count('<tr>\n    <td><span class="badge') == 3
    failed = client.get("/jobs/?status=failed").content.decode()
    assert failed.count('<span class="badge badge-failed">') == 11
    assert "badge-success" not in failed.split("<tbody>")[1]
    assert "No job matches" in client.get("/jobs/?model=nope").content.decode()
    assert Client().get("/jobs/").status_code == 302


def test_job_detail_shows_params_timings_and_cost(client, alice_with_credits):
    client.force_login(alice_with_credits)
    job = run(client, seed="5")
    html = client.get(f"/jobs/{job.request_id}/").content.decode()
    assert "&quot;seed&quot;: 5" in html
    assert 'data-field="queue">' in html and 'data-field="runtime">' in html
    assert f"{ledger.fmt(job.cost)} credits" in html
    assert f'data-event-log="{job.request_id}"' in html and "submitted" in html


def test_cancel_a_pending_job_releases_the_hold(client, alice_with_credits, monkeypatch):
    monkeypatch.setattr(registry, "enqueue", lambda job: None)
    client.force_login(alice_with_credits)
    job = run(client, max_tokens="1000")
    assert job.status == "pending" and ledger.balances(alice_with_credits)[1] < Decimal(10)
    response = client.post(f"/jobs/{job.request_id}/cancel", HTTP_HX_REQUEST="true")
    assert 'data-status="canceled"' in response.content.decode()
    job.refresh_from_db()
    assert job.status == "canceled" and ledger.balances(alice_with_credits) == (10, 10)
    assert client.get(f"/jobs/{job.request_id}/cancel").status_code == 405


def test_run_again_submits_a_new_job_with_the_same_params(client, alice_with_credits):
    client.force_login(alice_with_credits)
    first = run(client, seed="3", max_tokens="9")
    response = client.post(f"/jobs/{first.request_id}/rerun")
    second = Job.objects.order_by("-id").first()
    assert second.pk != first.pk
    # Validating again only normalises an absent stop list (None) to [].
    assert second.params == {**first.params, "stop": second.params["stop"]}
    assert second.params["stop"] in ([], None)
    assert response["Location"] == f"/jobs/{second.request_id}/"
    assert second.output["text"] == first.output["text"]  # same seed, same text


def test_another_users_job_is_404_on_every_job_page(client, alice_with_credits, bob):
    client.force_login(alice_with_credits)
    job = run(client)
    client.force_login(bob)
    rid = job.request_id
    assert client.get(f"/jobs/{rid}/").status_code == 404
    for action in ("cancel", "rerun", "share"):
        assert client.post(f"/jobs/{rid}/{action}").status_code == 404
    assert Job.objects.count() == 1 and Job.objects.get().share_token is None


def test_share_link_is_off_by_default_public_read_only_and_revocable(client, alice_with_credits):
    client.force_login(alice_with_credits)
    keys.create_key(alice_with_credits, "laptop")
    job = run(client)
    assert job.share_token is None
    client.post(f"/jobs/{job.request_id}/share", {"action": "create"})
    job.refresh_from_db()
    assert job.share_token and len(job.share_token) >= 32
    assert f"/s/{job.share_token}/" in client.get(f"/jobs/{job.request_id}/").content.decode()
    visitor = Client()
    shared = visitor.get(f"/s/{job.share_token}/")
    html = shared.content.decode()
    assert shared.status_code == 200
    assert job.output["text"].strip()[:12] in html.replace("&#x27;", "'").replace("&quot;", '"')
    assert "alice@example.com" not in html and "pgk_" not in html and "laptop" not in html
    assert "cancel" not in html.lower() and "/jobs/" not in html
    client.post(f"/jobs/{job.request_id}/share", {"action": "revoke"})
    assert visitor.get(f"/s/{job.share_token}/").status_code == 404
    assert visitor.get("/s/not-a-token/").status_code == 404


def test_job_panel_renders_media_outputs_from_the_status_document():
    job = Job(status="success", modality="image")
    doc = {
        "request_id": "6a1b2c3d-0000-4000-8000-000000000001",
        "status": "success",
        "progress": 1,
        "cost": "0.5",
        "images": [{"url": "https://h/media/a.png?sig=1"}, {"url": "https://h/media/b.png"}],
        "audio_url": "https://h/media/c.wav",
        "video": {"url": "https://h/media/d.mp4"},
    }
    html = render_to_string("playground/_job_panel.html", {"job": job, "doc": doc})
    assert '<img src="https://h/media/a.png?sig=1" alt="Generated image 1"' in html
    assert '<img src="https://h/media/b.png"' in html
    assert '<audio controls src="https://h/media/c.wav">' in html
    assert '<video controls src="https://h/media/d.mp4">' in html
    assert html.count(" download>") == 4
    assert 'data-field="text" hidden' in html  # no empty text box above the media


# -- Docs page


def test_docs_page_from_schema_pricing_and_a_real_example(client, alice_with_credits):
    keys.create_key(alice_with_credits, "laptop", tier="pro")
    client.force_login(alice_with_credits)
    html = client.get(f"/models/{MODEL}/docs").content.decode()
    for name in ("prompt", "messages", "max_tokens", "temperature", "top_p", "seed", "stop"):
        assert f'<td data-label="Name"><code>{name}</code></td>' in html
    assert "≤ 1024" in html and "wait_for_result" in html and "rate_limited" in html
    assert "Your active keys are on: <strong>pro</strong>" in html
    assert "$PLAYGROUND_API_KEY" in html and not REAL_KEY.search(html)
    response = re.search(r'<code id="example-response">(.*?)</code>', html, re.S).group(1)
    example = json.loads(response.replace("&quot;", '"').replace("&#x27;", "'"))
    assert example["status"] == "success" and example["model"] == MODEL
    assert example["text"] and example["usage"]["completion_tokens"] > 0
    embed = client.get("/models/hash-embed/docs").content.decode()
    body = re.search(r'<code id="example-response">(.*?)</code>', embed, re.S).group(1)
    embed_example = json.loads(body.replace("&quot;", '"'))
    assert embed_example["object"] == "list" and embed_example["data"][0]["object"] == "embedding"
    assert "/v1/embeddings" in embed and "generate-text" not in embed


@pytest.mark.parametrize(
    "modality,field", [("image", "images"), ("video", "video"), ("audio", "audio_url")]
)
def test_docs_example_response_of_a_media_model_has_its_own_output(modality, field):
    from playground import apidocs

    model = AIModel(slug="m", modality=modality, backend="openai", per_image=Decimal("0.5"))
    example = apidocs.example_response(model, "http://h:8000")
    assert field in example and "text" not in example and example["model"] == "m"
    urls = json.dumps(example)
    assert "http://h:8000/media/" in urls
    others = {"images", "video", "audio_url"} - {field}
    assert not others & set(example)


# -- Chat and compare


def test_chat_send_submits_a_turn_with_messages(client, alice_with_credits):
    client.force_login(alice_with_credits)
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is a class?"},
        ],
        "max_tokens": 12,
        "prompt": "ignored",
    }
    response = client.post(
        f"/models/{MODEL}/chat/send", json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 200
    job = Job.objects.get(request_id=response.json()["request_id"])
    assert job.params["messages"] == body["messages"] and job.params["prompt"] is None
    bad = client.post(
        f"/models/{MODEL}/chat/send", json.dumps({"messages": []}), content_type="application/json"
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages"
    assert client.get("/models/hash-embed/chat").status_code == 404
    assert Client().post(f"/models/{MODEL}/chat/send", "{}", "application/json").status_code == 302


def test_compare_runs_the_same_input_on_each_model(client, alice_with_credits):
    client.force_login(alice_with_credits)
    paid_model("other-text", "0")
    page = client.get("/compare/?modality=text").content.decode()
    assert 'value="trigram-pydoc" checked' in page and 'value="other-text" checked' in page
    response = client.post(
        "/compare/run",
        {"models": [MODEL, "nope"], "prompt": "The list", "max_tokens": "6"},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    job = Job.objects.get()
    assert job.params["prompt"] == "The list" and job.params["max_tokens"] == 6
    assert f'data-request-id="{job.request_id}"' in html and "No such model." in html


# -- Dashboard


def test_dashboard_after_login_and_catalogue_for_visitors(client, alice_with_credits):
    assert Client().get("/")["Location"] == "/models/"
    keys.create_key(alice_with_credits, "laptop")
    client.force_login(alice_with_credits)
    job = run(client)
    html = client.get("/").content.decode()
    assert "Dashboard" in html and ledger.fmt(ledger.balances(alice_with_credits)[0]) in html
    assert f"/jobs/{job.request_id}/" in html and "data-user-live" in html
    assert "active of 1" in html
    recent = client.get("/dashboard/recent").content.decode()
    assert "<html" not in recent and f"/jobs/{job.request_id}/" in recent


@pytest.fixture
async def _close_thread_connections():
    yield
    await sync_to_async(connections.close_all)()


async def test_user_websocket_gets_updates_of_own_jobs_only(
    client, alice_with_credits, bob, _close_thread_connections
):
    from playground.asgi import application
    from playground.engine import events

    await sync_to_async(client.force_login)(alice_with_credits)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    comm = WebsocketCommunicator(application, "/ws/user/", headers=[(b"cookie", cookie.encode())])
    assert (await comm.connect())[0]
    assert await comm.receive_json_from() == {"type": "ready"}
    bobs = await sync_to_async(Job.objects.create)(user=bob, model_slug="x", modality="text")
    await sync_to_async(events.publish_user_job)(bobs)
    await sync_to_async(client.post)(f"/models/{MODEL}/run", {"prompt": "x", "max_tokens": "3"})
    seen = []
    while not seen or seen[-1]["status"] != "success":
        seen.append(await comm.receive_json_from(timeout=5))
    job = await Job.objects.filter(user=alice_with_credits).afirst()
    assert {m["request_id"] for m in seen} == {str(job.request_id)}
    assert [m["status"] for m in seen] == ["pending", "running", "success"]
    await comm.disconnect()
    anonymous = WebsocketCommunicator(application, "/ws/user/")
    await anonymous.connect()
    assert (await anonymous.receive_output(2))["code"] == 4401


def test_pages_query_counts_do_not_grow_with_jobs(
    client, alice_with_credits, django_assert_max_num_queries
):
    model = catalogue.get_model(MODEL)
    client.force_login(alice_with_credits)
    client.get("/")  # the session's first write is not what is measured
    for _ in range(25):
        Job.objects.create(user=alice_with_credits, model=model, model_slug=MODEL, modality="text")
    for path in ("/", "/jobs/", "/models/", f"/models/{MODEL}/", f"/models/{MODEL}/docs"):
        with django_assert_max_num_queries(14):
            assert client.get(path).status_code == 200
