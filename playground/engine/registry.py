"""Which backend runs a model, and how a job reaches the engine."""

from django.conf import settings

from .base import Backend, Canceled, Result


def backend_for(model) -> Backend:
    if model.backend == "trigram":
        from .textgen import TrigramBackend

        return TrigramBackend(model.config)
    if model.backend == "hashing":
        from .embeddings import HashingEmbeddingBackend

        return HashingEmbeddingBackend(model.config)
    if model.backend == "procedural":
        from .imagegen import ProceduralImageBackend

        return ProceduralImageBackend(model.config)
    if model.backend == "animate":
        from .videogen import ImageToVideoBackend

        return ImageToVideoBackend(model.config)
    if model.backend == "espeak":
        from .audiogen import SpeechBackend

        return SpeechBackend(model.config)
    if model.backend == "synth":
        from .audiogen import MusicBackend

        return MusicBackend(model.config)
    if model.backend == "openai":
        from .openai_backend import OpenAIBackend

        backend = OpenAIBackend({"timeout": settings.PLAYGROUND_UPSTREAM_TIMEOUT, **model.config})
        if model.modality == "image":
            from .upstream_images import UpstreamImages

            return UpstreamImages(backend)
        return UpstreamEmbeddings(backend) if model.modality == "embedding" else backend
    if model.backend == "playground":
        from .queue_backend import QueueBackend

        timeout = settings.PLAYGROUND_UPSTREAM_TIMEOUT
        return QueueBackend({"timeout": timeout, "modality": model.modality, **model.config})
    raise LookupError(f"unknown backend {model.backend!r}")


class UpstreamEmbeddings:
    """An OpenAI-compatible upstream's /embeddings as a backend."""

    def __init__(self, backend):
        self.backend = backend

    def run(self, params: dict, emit) -> Result:
        if emit.canceled():
            raise Canceled()
        vectors, usage = self.backend.embed(params["input"])
        return Result(output={"embeddings": vectors}, usage=usage)


def prompt_text(params: dict) -> str:
    if params.get("prompt") is not None:
        return params["prompt"]
    from .textgen import render_chat

    return render_chat(params.get("messages") or [])


def prompt_tokens_bound(model, params: dict) -> int:
    """Input tokens for the hold: exact for our own tokenizer, an upper bound for upstreams."""
    if model.modality == "embedding":
        if model.backend == "hashing":
            from .embeddings import tokenize

            return sum(len(tokenize(t)) for t in params["input"])
        return sum(len(t.encode()) for t in params["input"])
    if model.modality != "text":
        return 0
    text = prompt_text(params)
    if model.backend == "trigram":
        from .textgen import get_model

        return get_model().count_tokens(text)
    # No tokenizer known for an upstream: real tokenizers never use more tokens than UTF-8 bytes
    # (plus a few per chat message for the template).
    return len(text.encode()) + 8 * len(params.get("messages") or [])


def prompt_tokens_estimate(model, params: dict) -> int:
    """Input tokens to charge when the upstream never reported usage: exact for our own
    tokenizer, a word count (an underestimate, never more) for upstreams."""
    if model.backend == "trigram":
        return prompt_tokens_bound(model, params)
    if model.modality == "embedding":
        return prompt_tokens_bound(model, params) if model.backend == "hashing" else 0
    if model.modality != "text":
        return 0
    if params.get("messages"):
        return sum(len(m["content"].split()) for m in params["messages"])
    return len((params.get("prompt") or "").split())


# Backends whose work happens on another server: their workers need no GPU, only the network.
REMOTE_BACKENDS = frozenset({"openai", "playground"})
# Every queue a model can get without an operator naming one.
QUEUES = ("text", "embedding", "image", "video", "audio", "upstream", "webhooks")
# Celery's default queue: tasks other than jobs, and jobs queued before there were queues.
DEFAULT_QUEUE = "engine"


def queue_for(model) -> str:
    """The engine queue of a model's jobs: the operator's choice, else by backend and modality."""
    if model is None:
        return "text"  # removed before its job ran: any worker fails it at once
    if model.queue:
        return model.queue
    if model.backend in REMOTE_BACKENDS:
        return "upstream"
    return model.modality


def all_queues() -> list[str]:
    """Every queue a worker that takes "all" consumes: the defaults and operators' own."""
    from ..models import AIModel

    named = AIModel.objects.exclude(queue="").values_list("queue", flat=True).distinct()
    known = {*QUEUES, DEFAULT_QUEUE}
    return [*QUEUES, DEFAULT_QUEUE, *sorted(set(named) - known)]


def time_limits(model) -> tuple[int, int]:
    """(soft, hard) seconds: the model's own, else the site's defaults."""
    soft = getattr(model, "soft_time_limit", None) or settings.PLAYGROUND_JOB_TIME_LIMIT
    default_hard = max(settings.PLAYGROUND_JOB_HARD_TIME_LIMIT, soft + 1)
    hard = getattr(model, "time_limit", None) or default_hard
    return soft, hard


# Celery's own soft limit (an exception raised inside the task) comes this long after ours,
# which backends see through `emit.canceled()`: it only stops code that never checks.
SOFT_LIMIT_GRACE = 2
# Webhook deliveries: their own queue, so slow receivers never delay jobs.
WEBHOOKS = "webhooks"


def enqueue(job) -> None:
    """Send the job to its model's queue, with the model's time limits (Celery enforces the
    hard one by killing the worker process running it)."""
    from . import embedded
    from .tasks import run_job

    queue = queue_for(job.model)
    soft, hard = time_limits(job.model)
    embedded.ensure_queue(queue)
    run_job.apply_async(
        args=[job.pk],
        queue=queue,
        soft_time_limit=min(soft + SOFT_LIMIT_GRACE, hard - 0.5),
        time_limit=hard,
    )
