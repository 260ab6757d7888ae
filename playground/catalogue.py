"""The model catalogue: built-in models defined in code, operator models in the database."""

import time
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from .models import AIModel

BUILTIN = [
    {
        "slug": "trigram-pydoc",
        "name": "Trigram LM (Python help topics)",
        "description": (
            "Built-in demo model. A word trigram language model trained at first start on the "
            "Python help topics that ship with CPython. It runs offline in milliseconds and "
            "streams token by token; its text is locally fluent and otherwise nonsense. It is "
            "here to show the platform, not to answer questions."
        ),
        "modality": "text",
        "backend": "trigram",
        "per_request": Decimal("0"),
        "per_1k_input": Decimal("0.01"),
        "per_1k_output": Decimal("0.02"),
        "max_tokens_limit": 1024,
    },
    {
        "slug": "hash-embed",
        "name": "Hashing embeddings (word and character n-grams)",
        "description": (
            "Built-in demo model. Deterministic 256-dimension text embeddings made by feature "
            "hashing of words, word pairs and character 3-5-grams: the same text always gives "
            "the same vector, and texts sharing words and spellings are closer than unrelated "
            "ones. Offline and instant; no learned semantics."
        ),
        "modality": "embedding",
        "backend": "hashing",
        "per_request": Decimal("0"),
        "per_1k_input": Decimal("0.001"),
        "per_1k_output": Decimal("0"),
        "max_tokens_limit": 0,
    },
    {
        "slug": "procedural-image",
        "name": "Procedural images (prompt-driven shapes and colours)",
        "description": (
            "Built-in demo model. Not a neural network: the prompt's colour words (red, ocean, "
            "sunset…), light words (night, bright, pastel) and scene words (sun, moon, "
            "mountains, sea, city, forest, stars) compose a picture with Pillow, laid out by "
            "the seed; each refinement step adds finer detail. Same prompt, seed, size and "
            "steps, same picture. PNG or WebP, offline, in milliseconds."
        ),
        "modality": "image",
        "backend": "procedural",
        "per_request": Decimal("0"),
        "per_1k_input": Decimal("0"),
        "per_1k_output": Decimal("0"),
        "per_image": Decimal("0.002"),
        "max_tokens_limit": 0,
    },
    {
        "slug": "animate-video",
        "name": "Image-to-video (camera moves)",
        "description": (
            "Built-in demo model. Not a neural network: it animates your picture into an "
            "H.264 MP4 with the camera moves and effects the prompt names (zoom in/out, pan "
            "left/right/up/down, rotate, parallax, warm or cool colour drift, pulse); "
            "negative_prompt switches moves off and guidance sets their strength. Billed per "
            "second of video."
        ),
        "modality": "video",
        "backend": "animate",
        "per_request": Decimal("0"),
        "per_1k_input": Decimal("0"),
        "per_1k_output": Decimal("0"),
        "per_second": Decimal("0.01"),
        "max_tokens_limit": 0,
    },
    {
        "slug": "espeak-tts",
        "name": "Text to speech (espeak-ng)",
        "description": (
            "Built-in demo model. Speaks your text with espeak-ng, the formant synthesiser "
            "(robotic but clear, many languages), as WAV or MP3. Needs the espeak-ng program "
            "on the server. Billed per second of speech."
        ),
        "modality": "audio",
        "backend": "espeak",
        "per_request": Decimal("0"),
        "per_1k_input": Decimal("0"),
        "per_1k_output": Decimal("0"),
        "per_second": Decimal("0.0005"),
        "max_tokens_limit": 0,
    },
    {
        "slug": "synth-music",
        "name": "Prompt-to-music synth",
        "description": (
            "Built-in demo model. Not a neural network: the prompt's words set the tempo "
            '(slow, dance, or "90 bpm"), the key ("in D", "A minor"; sad or dark pick '
            "minor) and the instrument (piano, organ, strings, bells, flute, synth, guitar; "
            "drums for a beat); the seed writes the melody over a four-chord progression. "
            "WAV or MP3, billed per second."
        ),
        "modality": "audio",
        "backend": "synth",
        "per_request": Decimal("0"),
        "per_1k_input": Decimal("0"),
        "per_1k_output": Decimal("0"),
        "per_second": Decimal("0.001"),
        "max_tokens_limit": 0,
    },
]
BUILTIN_SLUGS = {m["slug"] for m in BUILTIN}


def sync_builtins() -> None:
    """Create or update the built-in models from code."""
    for spec in BUILTIN:
        AIModel.objects.update_or_create(slug=spec["slug"], defaults={**spec, "builtin": True})


def sync_after_migrate(**kwargs) -> None:
    sync_builtins()


def visible_models():
    return AIModel.objects.filter(enabled=True)


# Enabled models found recently, by slug: {slug: (until, model)}. A save or delete of a model
# in this process empties it; other processes see a change within
# PLAYGROUND_MODEL_CACHE_SECONDS. Callers only read the instances they get.
_found: dict[str, tuple[float, AIModel]] = {}


def forget_models(*args, **kwargs) -> None:
    _found.clear()
    transaction.on_commit(_found.clear)


post_save.connect(forget_models, sender=AIModel, dispatch_uid="catalogue-forget-save")
post_delete.connect(forget_models, sender=AIModel, dispatch_uid="catalogue-forget-delete")


def get_model(slug: str) -> AIModel | None:
    """The enabled model with this slug, or None."""
    hit = _found.get(slug)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    model = visible_models().filter(slug=slug).first()
    seconds = settings.PLAYGROUND_MODEL_CACHE_SECONDS
    if model is not None and seconds > 0:
        if len(_found) > 1000:
            _found.clear()
        _found[slug] = (time.monotonic() + seconds, model)
    return model


RUN_TIMES_TTL = 30


def run_times() -> dict:
    """{model pk: (average run seconds, runs)} over the successful jobs, in one SQL aggregate.

    Kept for a few seconds: the catalogue is the busiest page and the figure moves slowly.
    """
    from django.core.cache import cache

    return cache.get_or_set("pg:run_times", _run_times, RUN_TIMES_TTL)


def _run_times() -> dict:
    from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F

    from .models import Job

    took = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    rows = (
        Job.objects.filter(status=Job.SUCCESS, started_at__isnull=False, finished_at__isnull=False)
        .values("model_id")
        .annotate(average=Avg(took), runs=Count("id"))
    )
    return {
        row["model_id"]: (row["average"].total_seconds(), row["runs"])
        for row in rows
        if row["average"] is not None
    }
