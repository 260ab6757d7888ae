"""Services mode, black-box: media made by a separate worker process, served by daphne.

The worker stores outputs, the web process signs and serves them; uploads go the other way.
"""

import io
import os
import tempfile
import wave

import httpx
import imageio_ffmpeg
import pytest
from PIL import Image

from tests.live import require_services, start_site

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    require_services()
    site = start_site(tmp_path_factory.mktemp("media-services"), services=True, workers=1)
    try:
        site.key = site.user_with_key("media@example.com", "5")
        yield site
    finally:
        site.stop()


def call(site, method, path, **kwargs):
    headers = {"Authorization": f"Bearer {site.key}"}
    return httpx.request(method, site.base_url + path, headers=headers, timeout=60, **kwargs)


def generate(site, modality, **body):
    r = call(site, "POST", f"/v1/generate-{modality}", json={"wait_for_result": True, **body})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "success", doc
    return doc


def download(site, url: str) -> bytes:
    assert url.startswith(site.base_url + "/media/")  # absolute, on the host we called
    r = httpx.get(url, timeout=30)  # no key
    assert r.status_code == 200, r.text
    return r.content


def test_image_upload_video_and_music_across_processes(site):
    require_services()
    image = generate(site, "image", model="procedural-image", prompt="sun over mountains",
                     width=192, height=128, steps=4, seed=1)  # fmt: skip
    picture = download(site, image["images"][0]["url"])
    assert Image.open(io.BytesIO(picture)).size == (192, 128)

    # An output used again as an input, by its link; and a fresh upload of the same bytes.
    uploaded = call(
        site, "POST", "/v1/files", files={"file": ("p.png", picture)}, data={"purpose": "input"}
    ).json()
    assert uploaded["bytes"] == len(picture)
    for source in (image["images"][0]["url"], uploaded["url"]):
        video = generate(site, "video", model="animate-video", prompt="zoom out", image=source,
                         aspect_ratio="4:3", resolution="360p", num_frames=10, fps=10)  # fmt: skip
        with tempfile.NamedTemporaryFile(suffix=".mp4", delete=False) as f:
            f.write(download(site, video["video"]["url"]))
        try:
            assert imageio_ffmpeg.count_frames_and_secs(f.name)[0] == 10
        finally:
            os.unlink(f.name)

    music = generate(site, "audio", model="synth-music", prompt="organ", duration=2, seed=3)
    with wave.open(io.BytesIO(download(site, music["audio_url"]))) as w:
        assert w.getnframes() == 2 * w.getframerate()

    listing = call(site, "GET", "/v1/files").json()
    assert [f["id"] for f in listing["data"]] == [uploaded["id"]]  # outputs are not uploads
