"""The embedded engine (daphne's own worker) takes every queue, one named after it started too."""

import httpx

from tests.live import start_site


def test_embedded_engine_runs_a_model_on_a_queue_named_after_it_started(tmp_path):
    site = start_site(tmp_path)
    try:
        key = site.user_with_key("q@example.com", "5")
        site.shell(
            "from playground.models import AIModel\n"
            "AIModel.objects.create(slug='gpu-trigram', name='g', modality='text', "
            "backend='trigram', queue='gpu-7')"
        )
        r = httpx.post(
            site.base_url + "/v1/generate-text",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": "gpu-trigram",
                "prompt": "The",
                "max_tokens": 5,
                "wait_for_result": True,
            },
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "success", r.json()
    finally:
        site.stop()
