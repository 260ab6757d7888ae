"""The pages: signup grant, catalogue, model form, htmx run, job page, API keys."""

import re
import uuid
from decimal import Decimal

import pytest
from django.test import Client

from accounts import keys
from accounts.models import ApiKey, User
from billing import ledger
from playground.models import Job
from tests.conftest import sudo_login

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "trigram-pydoc"


def new_key_form(**fields):
    return {"name": "laptop", "tier": "free", "form_id": str(uuid.uuid4()), **fields}


def test_signup_grants_credits_once_and_header_shows_balance(client, settings):
    settings.PLAYGROUND_SIGNUP_CREDITS = Decimal("7.5")
    response = client.post(
        "/accounts/signup/",
        {
            "email": "new@example.com",
            "password1": "a-long-pass-phrase-9",
            "password2": "a-long-pass-phrase-9",
        },
        follow=True,
    )
    assert response.status_code == 200
    user = User.objects.get(email="new@example.com")
    assert ledger.balances(user)[0] == Decimal("7.5")
    assert "7.5" in client.get("/models/").content.decode()


def test_catalogue_lists_models(client):
    html = client.get("/models/").content.decode()
    assert f'href="/models/{MODEL}/"' in html


def test_model_page_form_comes_from_the_schema(client):
    html = client.get(f"/models/{MODEL}/").content.decode()
    for name in ("prompt", "messages", "max_tokens", "temperature", "top_p", "seed", "stop"):
        assert f'name="{name}"' in html
    assert 'max="1024"' in html
    assert "Log in" in html  # anonymous: no Run button


def test_unknown_model_page_is_404(client):
    assert client.get("/models/nope/").status_code == 404


def test_run_with_htmx_returns_job_panel_and_holds_credits(client, alice_with_credits):
    client.force_login(alice_with_credits)
    response = client.post(
        f"/models/{MODEL}/run",
        {"prompt": "The module", "max_tokens": "12", "seed": "4"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html  # a partial, not a page
    job = Job.objects.get(user=alice_with_credits)
    assert f'data-request-id="{job.request_id}"' in html
    assert job.params["max_tokens"] == 12 and job.params["seed"] == 4
    assert job.status == "success"  # tests run the engine eagerly
    assert ledger.balances(alice_with_credits)[0] == Decimal("10") - job.cost


def test_run_with_bad_input_shows_error_and_creates_nothing(client, alice_with_credits):
    client.force_login(alice_with_credits)
    response = client.post(
        f"/models/{MODEL}/run", {"prompt": "x", "max_tokens": "99999"}, HTTP_HX_REQUEST="true"
    )
    assert "max_tokens" in response.content.decode()
    assert not Job.objects.exists()


def test_run_without_js_redirects_to_job_page(client, alice_with_credits):
    client.force_login(alice_with_credits)
    response = client.post(f"/models/{MODEL}/run", {"prompt": "The module"})
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.request_id}/"
    page = client.get(response["Location"]).content.decode()
    assert job.output["text"].strip()[:10] in page.replace("&quot;", '"').replace("&#x27;", "'")


def test_run_requires_login_and_csrf(alice_with_credits):
    anonymous = Client()
    assert anonymous.post(f"/models/{MODEL}/run", {"prompt": "x"}).status_code == 302
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice_with_credits)
    assert strict.post(f"/models/{MODEL}/run", {"prompt": "x"}).status_code == 403
    assert not Job.objects.exists()


def test_insufficient_credits_on_the_page(client, bob):
    client.force_login(bob)
    response = client.post(f"/models/{MODEL}/run", {"prompt": "x"}, HTTP_HX_REQUEST="true")
    assert "credits" in response.content.decode()
    assert not Job.objects.exists()


def test_another_users_job_page_is_404(client, alice_with_credits, bob):
    client.force_login(alice_with_credits)
    client.post(f"/models/{MODEL}/run", {"prompt": "x"})
    job = Job.objects.get()
    client.force_login(bob)
    assert client.get(f"/jobs/{job.request_id}/").status_code == 404


def test_keys_page_shows_a_new_key_once(client, alice):
    sudo_login(client, alice)
    html = client.post("/keys/", new_key_form(name="laptop")).content.decode()
    raw = re.search(r"pgk_[A-Za-z0-9_-]{40,}", html).group(0)
    assert keys.authenticate_key(raw).name == "laptop"
    later = client.get("/keys/").content.decode()
    assert raw not in later and raw[:12] in later and "laptop" in later
    assert ApiKey.objects.get().hashed != raw


def test_resubmitted_key_form_does_not_create_a_second_key(client, alice):
    sudo_login(client, alice)
    form = new_key_form()
    first = client.post("/keys/", form).content.decode()
    assert "pgk_" in first
    again = client.post("/keys/", form, follow=True)
    assert ApiKey.objects.count() == 1
    assert "already" in again.content.decode()


def test_keys_page_bad_name_creates_nothing(client, alice):
    sudo_login(client, alice)
    response = client.post("/keys/", new_key_form(name=""))
    assert response.status_code == 200 and not ApiKey.objects.exists()


def test_revoke_own_key_and_not_someone_elses(client, alice, bob):
    key, raw = keys.create_key(alice, "a")
    client.force_login(bob)
    assert client.post(f"/keys/{key.public_id}/revoke").status_code == 404
    assert keys.authenticate_key(raw) is not None
    client.force_login(alice)
    assert client.post(f"/keys/{key.public_id}/revoke").status_code == 302
    assert keys.authenticate_key(raw) is None
    assert client.get(f"/keys/{key.public_id}/revoke").status_code == 405


def test_keys_page_requires_login_and_csrf(alice):
    assert Client().get("/keys/").status_code == 302
    strict = Client(enforce_csrf_checks=True)
    sudo_login(strict, alice)
    assert strict.post("/keys/", new_key_form()).status_code == 403
    assert not ApiKey.objects.exists()


def test_static_assets_are_served(client):
    assert client.get("/static/css/site.css").status_code == 200
    assert client.get("/static/js/jobs.js").status_code == 200


def test_keys_list_shows_each_keys_spend(client, api, alice_with_credits):
    key, raw = keys.create_key(alice_with_credits, "spender", tier="unlimited")
    keys.create_key(alice_with_credits, "idle")
    body = {"model": MODEL, "prompt": "x", "max_tokens": 5, "wait_for_result": True}
    cost = api.post("/v1/generate-text", body, key=raw).json()["cost"]
    sudo_login(client, alice_with_credits)
    rows = re.findall(r"<tr>.*?</tr>", client.get("/keys/").content.decode(), re.S)
    spender = next(r for r in rows if "spender" in r)
    idle = next(r for r in rows if "idle" in r and "spender" not in r)
    assert f"<td>{cost}" in spender and "<td>0" in idle


def test_embedding_model_page_runs_one_text_with_commas(client, alice_with_credits):
    html = client.get("/models/hash-embed/").content.decode()
    assert 'name="input"' in html and "<textarea" in html and "/v1/embeddings" in html
    client.force_login(alice_with_credits)
    response = client.post(
        "/models/hash-embed/run", {"input": "cats, dogs and mats"}, HTTP_HX_REQUEST="true"
    )
    job = Job.objects.get()
    assert job.params["input"] == ["cats, dogs and mats"]
    assert job.status == "success" and len(job.output["embeddings"][0]) == 256
    assert "vector(s) of 256 numbers" in client.get(f"/jobs/{job.request_id}/").content.decode()
    assert response.status_code == 200
