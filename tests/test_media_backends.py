"""The built-in image, video and audio models: real outputs, decoded; billing; cancel mid-run."""

import base64
import io
import os
import shutil
import subprocess
import tempfile
import wave
from decimal import Decimal
from urllib.parse import urlsplit

import imageio_ffmpeg
import pytest
from PIL import Image

from billing import ledger
from playground import jobs
from playground.engine import registry, runner
from playground.engine.base import Canceled
from playground.engine.imagegen import ProceduralImageBackend
from playground.models import Job, MediaFile

pytestmark = pytest.mark.django_db(transaction=True)


def png_data_uri(size=(64, 48), colour=(200, 40, 40)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def fetch(client, url: str) -> bytes:
    """The bytes behind a signed absolute URL, fetched with no key."""
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.netloc == "testserver"
    response = client.get(f"{parts.path}?{parts.query}")
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)


def generate(api, key, modality, **body):
    response = api.post(f"/v1/generate-{modality}", {"wait_for_result": True, **body}, key=key)
    assert response.status_code == 200, response.content
    return response.json()


class Recorder:
    """An emitter for calling backends directly."""

    def __init__(self, cancel_at=None):
        self.progress_values, self.logs, self.files = [], [], {}
        self.cancel_at = cancel_at

    def progress(self, value):
        self.progress_values.append(value)

    def log(self, message):
        self.logs.append(message)

    def delta(self, text):
        pass

    def metrics(self, **numbers):
        pass

    def canceled(self):
        return self.cancel_at is not None and len(self.progress_values) >= self.cancel_at

    def store(self, data, filename, content_type):
        self.files[filename] = (data, content_type)
        return f"00000000-0000-0000-0000-000000000000/{filename}"


# ---- image -----------------------------------------------------------------------------


def test_image_end_to_end_png(api, client, alice_key, alice_with_credits):
    doc = generate(
        api, alice_key, "image", model="procedural-image", prompt="a red sun over the sea",
        width=320, height=192, num_images=2, steps=5, seed=11,
    )  # fmt: skip
    assert doc["status"] == "success" and doc["progress"] == 1
    assert doc["seed"] == 11 and len(doc["images"]) == 2
    for item in doc["images"]:
        assert set(item) >= {"url", "width", "height"}
        picture = Image.open(io.BytesIO(fetch(client, item["url"])))
        assert picture.format == "PNG" and picture.size == (320, 192)
    assert doc["cost"] == "0.004"  # 2 images at 0.002
    assert ledger.balances(alice_with_credits) == (Decimal("9.996"), Decimal("9.996"))
    # The same document on poll and on GET /v1/requests/{id}.
    rid = doc["request_id"]
    assert api.get(f"/v1/requests/{rid}", key=alice_key).json() == doc


def test_image_webp_and_determinism(api, client, alice_key):
    body = dict(model="procedural-image", prompt="mountains at night", width=128, height=128,
                steps=3, seed=5, output_format="webp")  # fmt: skip
    first = generate(api, alice_key, "image", **body)
    again = generate(api, alice_key, "image", **body)
    other = generate(api, alice_key, "image", **{**body, "seed": 6})
    data = [fetch(client, d["images"][0]["url"]) for d in (first, again, other)]
    picture = Image.open(io.BytesIO(data[0]))
    assert picture.format == "WEBP" and picture.size == (128, 128)
    assert data[0] == data[1] and data[0] != data[2]


def test_image_reports_progress_per_step():
    emit = Recorder()
    params = {"prompt": "city", "width": 64, "height": 64, "num_images": 2, "steps": 4,
              "seed": 1, "output_format": "png", "negative_prompt": ""}  # fmt: skip
    result = ProceduralImageBackend({}).run(params, emit)
    assert emit.progress_values == [k / 8 for k in range(1, 9)]
    assert result.usage == {"images": 2} and len(emit.files) == 2


@pytest.mark.parametrize(
    "body,param",
    [
        ({"width": 2048}, "width"),
        ({"width": 100}, "width"),  # not a multiple of 8
        ({"num_images": 5}, "num_images"),
        ({"steps": 0}, "steps"),
        ({"output_format": "gif"}, "output_format"),
        ({"prompt": ""}, "prompt"),
    ],
)
def test_image_bad_parameters_are_400(api, alice_key, body, param):
    response = api.post(
        "/v1/generate-image", {"model": "procedural-image", "prompt": "x", **body}, key=alice_key
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert Job.objects.count() == 0


# ---- video -----------------------------------------------------------------------------


def video_facts(data: bytes) -> tuple[int, tuple[int, int], float]:
    """(frames, (width, height), fps) of an MP4, decoded by ffmpeg."""
    with tempfile.NamedTemporaryFile(suffix=".mp4", delete=False) as f:
        f.write(data)
    try:
        frames, _ = imageio_ffmpeg.count_frames_and_secs(f.name)
        reader = imageio_ffmpeg.read_frames(f.name)
        meta = next(reader)
        reader.close()
        return frames, tuple(meta["size"]), meta["fps"]
    finally:
        os.unlink(f.name)


def test_video_end_to_end_from_a_data_uri(api, client, alice_key, alice_with_credits):
    doc = generate(
        api, alice_key, "video", model="animate-video", prompt="slow zoom in, warm",
        image=png_data_uri(), aspect_ratio="1:1", resolution="360p", num_frames=12, fps=8,
        seed=2,
    )  # fmt: skip
    assert doc["status"] == "success", doc
    video = doc["video"]
    assert video["width"] == video["height"] == 360
    assert video["num_frames"] == 12 and video["duration"] == 1.5
    data = fetch(client, video["url"])
    assert data[4:8] == b"ftyp"
    assert video_facts(data) == (12, (360, 360), 8.0)
    assert doc["cost"] == "0.015"  # 1.5 s at 0.01
    assert ledger.balances(alice_with_credits)[0] == Decimal("9.985")


def test_video_from_an_uploaded_file_link_in_16_9(api, client, alice_key):
    upload = client.post(
        "/v1/files",
        {"file": io.BytesIO(base64.b64decode(png_data_uri().split(",")[1])), "purpose": "input"},
        HTTP_AUTHORIZATION=f"Bearer {alice_key}",
    ).json()
    doc = generate(
        api, alice_key, "video", model="animate-video", prompt="pan left", image=upload["url"],
        resolution="360p", num_frames=8, fps=24,
    )  # fmt: skip
    assert doc["status"] == "success", doc
    frames, size, _ = video_facts(fetch(client, doc["video"]["url"]))
    assert (frames, size) == (8, (640, 360))


def test_video_takes_image_url_as_the_contract_names_it(api, alice_key):
    doc = generate(api, alice_key, "video", model="animate-video", prompt="pan up",
                   image_url=png_data_uri(), resolution="360p", num_frames=8)  # fmt: skip
    assert doc["status"] == "success"
    both = api.post(
        "/v1/generate-video",
        {"model": "animate-video", "prompt": "x", "image": png_data_uri(), "image_url": "y"},
        key=alice_key,
    )
    assert both.status_code == 400
    bad = api.post(
        "/v1/generate-video",
        {"model": "animate-video", "prompt": "x", "image_url": "gopher://x/a.png"},
        key=alice_key,
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "image_url"


def test_video_needs_an_image_naming_the_field(api, alice_key):
    for image in ("not a url", "ftp://example.com/a.png", "data:text/plain;base64,aGVsbG8="):
        response = api.post(
            "/v1/generate-video",
            {"model": "animate-video", "prompt": "zoom", "image": image},
            key=alice_key,
        )
        assert response.status_code == 400, image
        assert response.json()["error"]["param"] == "image"
    assert Job.objects.count() == 0


# ---- audio -----------------------------------------------------------------------------


def wav_facts(data: bytes) -> tuple[int, int, float]:
    with wave.open(io.BytesIO(data)) as w:
        return w.getnchannels(), w.getframerate(), w.getnframes() / w.getframerate()


def test_music_end_to_end(api, client, alice_key, alice_with_credits):
    doc = generate(
        api, alice_key, "audio", model="synth-music",
        prompt="calm piano in D minor, 72 bpm, with drums", duration=3, seed=4,
    )  # fmt: skip
    assert doc["status"] == "success", doc
    assert (doc["tempo"], doc["key"], doc["instrument"]) == (72, "D minor", "piano")
    assert doc["duration"] == 3
    channels, rate, seconds = wav_facts(fetch(client, doc["audio_url"]))
    assert (channels, rate, seconds) == (1, 24000, 3.0)
    assert doc["cost"] == "0.003"
    assert ledger.balances(alice_with_credits)[0] == Decimal("9.997")


def test_music_as_mp3(api, client, alice_key):
    doc = generate(
        api, alice_key, "audio", model="synth-music", prompt="bells", duration=2,
        output_format="mp3",
    )  # fmt: skip
    assert doc["format"] == "mp3" and doc["content_type"] == "audio/mpeg"
    data = fetch(client, doc["audio_url"])
    assert data[:3] == b"ID3" or data[0] == 0xFF
    # Decoded back by ffmpeg: two seconds (plus the encoder's few ms of padding).
    raw = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", "pipe:0", "-f", "s16le",
         "-ac", "1", "-ar", "24000", "pipe:1"],
        input=data, capture_output=True, check=True,
    ).stdout  # fmt: skip
    seconds = len(raw) / 2 / 24000
    assert 2.0 <= seconds < 2.2


@pytest.mark.skipif(not shutil.which("espeak-ng"), reason="needs espeak-ng (CI installs it)")
def test_speech_end_to_end(api, client, alice_key, alice_with_credits):
    doc = generate(
        api, alice_key, "audio", model="espeak-tts",
        prompt="Hello from the playground. This is a second sentence.",
    )  # fmt: skip
    assert doc["status"] == "success", doc
    channels, rate, seconds = wav_facts(fetch(client, doc["audio_url"]))
    assert channels == 1 and rate == 22050
    assert 1.5 < seconds < 10 and abs(seconds - doc["duration"]) < 0.01
    job = Job.objects.get(request_id=doc["request_id"])
    assert job.usage["seconds"] == doc["duration"]
    assert Decimal(doc["cost"]) == (Decimal("0.0005") * Decimal(str(doc["duration"]))).quantize(
        Decimal(doc["cost"])
    )
    assert job.cost <= job.hold_amount


def test_speech_without_espeak_fails_clearly_and_charges_nothing(
    api, alice_key, alice_with_credits, settings
):
    settings.PLAYGROUND_ESPEAK_BIN = "/nonexistent/espeak-ng"
    doc = generate(api, alice_key, "audio", model="espeak-tts", prompt="Hello.")
    assert doc["status"] == "failed"
    assert doc["error"]["code"] == "model_unavailable"
    assert "espeak-ng is not installed" in doc["error"]["message"]
    assert doc["cost"] == "0"
    assert ledger.balances(alice_with_credits) == (Decimal("10"), Decimal("10"))


def test_speech_hold_covers_the_longest_speech(api, alice_key, monkeypatch):
    monkeypatch.setattr(registry, "enqueue", lambda job: None)
    text = "a " * 200
    rid = api.post(
        "/v1/generate-audio", {"model": "espeak-tts", "prompt": text, "speed": 100}, key=alice_key
    ).json()["request_id"]
    job = Job.objects.get(request_id=rid)
    # 400 characters at 100 words per minute, as if each were a word: 240 s, plus pauses.
    assert job.hold_amount >= Decimal("0.0005") * 240


# ---- cancel mid-run --------------------------------------------------------------------

CANCEL_CASES = {
    "image": {"model": "procedural-image", "prompt": "stars", "width": 512, "height": 512,
              "num_images": 4, "steps": 50},
    "video": {"model": "animate-video", "prompt": "zoom in", "num_frames": 120,
              "resolution": "360p"},
    "music": {"model": "synth-music", "prompt": "dance with drums", "duration": 60},
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CANCEL_CASES))
def test_cancel_mid_run_stops_and_charges_nothing(
    api, alice_key, alice_with_credits, monkeypatch, case
):
    body = dict(CANCEL_CASES[case])
    if case == "video":
        body["image"] = png_data_uri()
    modality = {"music": "audio"}.get(case, case)
    monkeypatch.setattr(registry, "enqueue", lambda job: None)  # run it by hand below
    monkeypatch.setattr(runner, "CANCEL_CHECK_SECONDS", 0)
    rid = api.post(f"/v1/generate-{modality}", body, key=alice_key).json()["request_id"]
    job = Job.objects.get(request_id=rid)
    assert job.hold_amount > 0
    seen = []
    original = runner.JobEmitter.progress

    def progress(self, value):
        original(self, value)
        seen.append(value)
        if len(seen) == 3:
            jobs.cancel_job(Job.objects.get(pk=job.pk))

    monkeypatch.setattr(runner.JobEmitter, "progress", progress)
    runner.run_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.CANCELED and job.cost == 0 and not job.hold_open
    assert len(seen) == 3, "the backend kept going after the cancel"
    assert max(seen) < 0.5
    assert ledger.balances(alice_with_credits) == (Decimal("10"), Decimal("10"))
    assert not MediaFile.objects.filter(job=job).exists()


def test_speech_cancel_stops_espeak(monkeypatch):
    if not shutil.which("espeak-ng"):
        pytest.skip("needs espeak-ng (CI installs it)")
    from playground.engine.audiogen import SpeechBackend

    emit = Recorder(cancel_at=1)
    params = {"prompt": "One. Two. Three. Four.", "voice": "en-us", "speed": 175, "pitch": 50}
    with pytest.raises(Canceled):
        SpeechBackend({}).run(params, emit)
    assert emit.progress_values == [0.25] and not emit.files


def test_files_of_a_job_canceled_after_storing_some_are_deleted(
    api, alice_key, alice_with_credits, monkeypatch
):
    monkeypatch.setattr(registry, "enqueue", lambda job: None)
    monkeypatch.setattr(runner, "CANCEL_CHECK_SECONDS", 0)
    body = {"model": "procedural-image", "prompt": "sea", "width": 64, "height": 64,
            "num_images": 2, "steps": 2}  # fmt: skip
    rid = api.post("/v1/generate-image", body, key=alice_key).json()["request_id"]
    job = Job.objects.get(request_id=rid)
    stored = []
    original = runner.JobEmitter.store

    def store(self, data, filename, content_type):
        ref = original(self, data, filename, content_type)
        stored.append(MediaFile.objects.get(public_id=ref.split("/")[0]).name)
        jobs.cancel_job(Job.objects.get(pk=job.pk))  # canceled right after the first image
        return ref

    monkeypatch.setattr(runner.JobEmitter, "store", store)
    runner.run_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.CANCELED and len(stored) == 1
    assert not MediaFile.objects.filter(job=job).exists()
    from playground import media

    assert not media.storage().exists(stored[0])
    assert ledger.balances(alice_with_credits) == (Decimal("10"), Decimal("10"))
