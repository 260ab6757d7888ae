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
    if model.backend == "openai":
        from .openai_backend import OpenAIBackend

        backend = OpenAIBackend({"timeout": settings.PLAYGROUND_UPSTREAM_TIMEOUT, **model.config})
        return UpstreamEmbeddings(backend) if model.modality == "embedding" else backend
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


# Webhook deliveries share the engine's default queue until queues are split per workload.
WEBHOOKS = "engine"


def enqueue(job) -> None:
    from .tasks import run_job

    run_job.apply_async(args=[job.pk], queue=queue_for(job))


def queue_for(job) -> str:
    return "engine"
