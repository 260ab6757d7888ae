"""The model catalogue: built-in models defined in code, operator models in the database."""

from decimal import Decimal

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


def get_model(slug: str) -> AIModel | None:
    return visible_models().filter(slug=slug).first()


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
