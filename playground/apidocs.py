"""The per-model API docs page: parameters from the schema, examples, limits, errors.

The example response is real for built-in models (the backend runs once, in-process, on the
example input) and a sample of the contract's shape for the model's modality otherwise.
"""

import json
import threading
import uuid

from billing import ledger

from . import pricing, ratelimit, snippets
from .forms import _bound, _kind, _variants
from .schemas import json_schema

EXAMPLE_ID = "3f2b8c1e-7d4a-4e5b-9c6f-0a1b2c3d4e5f"
EXAMPLE_CREATED = 1767225600
EXAMPLE_PARAMS = {
    "text": {"prompt": "The function", "max_tokens": 32, "seed": 7},
    "embedding": {"input": ["The function", "The class"]},
    "image": {"prompt": "A lighthouse at dusk, oil painting"},
    "video": {"prompt": "Waves rolling onto a beach"},
    "audio": {"prompt": "A calm piano melody"},
}
# What each modality's output looks like (CONTRACT §4), for models we cannot run here.
SAMPLE_OUTPUT = {
    "text": {
        "text": " is called with the arguments given.",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10},
    },
    "image": {"images": [{"url": "{base}/media/3f2b8c1e.png?expires=1767229200&sig=…"}]},
    "video": {"video": {"url": "{base}/media/3f2b8c1e.mp4?expires=1767229200&sig=…"}},
    "audio": {"audio_url": "{base}/media/3f2b8c1e.wav?expires=1767229200&sig=…"},
    "embedding": {"embeddings": [[0.0123, -0.0456, 0.0789], [0.0222, 0.0333, -0.0444]]},
}
ERRORS = [
    (400, "invalid_parameter", "A parameter is missing or out of range; `param` names it."),
    (400, "invalid_host", "The Host header is not one this server answers to."),
    (401, "invalid_api_key", "No key, or a revoked, expired or unknown one."),
    (402, "insufficient_credits", "The worst-case cost does not fit your available credits."),
    (402, "key_spend_cap_reached", "A submit would exceed the key's spend cap (reads still work)."),
    (403, "model_not_allowed", "The key may not use this model."),
    (404, "model_not_found", "No such model (`param` is `model`); unknown or another user's job."),
    (409, "idempotency_key_reused", "The same Idempotency-Key with another body."),
    (413, "request_too_large", "The JSON body is over the size limit."),
    (429, "rate_limited", "Over your key's rate budget; wait `Retry-After` seconds."),
    (502, "upstream_error", "The model's upstream failed (the job fails, nothing is charged)."),
    (503, "engine_unavailable", "The generation engine is down; try again."),
    (504, "upstream_timeout", "The upstream did not answer in time."),
]
STATUSES = [
    ("pending", "Queued; `queue_position` says how many jobs are ahead."),
    ("running", "Generating; `progress` goes from 0 to 1."),
    ("success", "Done: the output, `usage` and `cost` are in the document."),
    ("failed", "`error` has a code and a message; nothing is charged."),
    ("canceled", "Canceled before it finished; nothing is charged."),
]


def example_params(model) -> dict:
    return dict(EXAMPLE_PARAMS.get(model.modality, {}))


def parameter_rows(schema: dict) -> list[dict]:
    required = set(schema.get("required", []))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        types = sorted({v.get("type", "object") for v in _variants(prop)})
        enum = next((v["enum"] for v in _variants(prop) if "enum" in v), None)
        low = _bound(prop, "minimum")
        low_open = _bound(prop, "exclusiveMinimum")
        high = _bound(prop, "maximum")
        limits = []
        if low is not None:
            limits.append(f"≥ {low}")
        if low_open is not None:
            limits.append(f"> {low_open}")
        if high is not None:
            limits.append(f"≤ {high}")
        for variant in _variants(prop):
            if "maxLength" in variant:
                limits.append(f"at most {variant['maxLength']:,} characters")
            if "maxItems" in variant:
                limits.append(f"{variant.get('minItems', 0)}–{variant['maxItems']} items")
        if enum:
            limits.append("one of " + ", ".join(f"`{e}`" for e in enum))
        default = prop.get("default")
        rows.append(
            {
                "name": name,
                "type": " or ".join(_type_name(t, _kind(prop)) for t in types),
                "required": name in required,
                "default": "—" if default is None else json.dumps(default),
                "range": "; ".join(limits) or "—",
                "description": prop.get("description", ""),
            }
        )
    return rows


def _type_name(json_type: str, kind: str) -> str:
    return {"array": "array", "object": "object"}.get(json_type, json_type)


class _NullEmitter:
    def progress(self, value):
        pass

    def delta(self, text):
        pass

    def log(self, message):
        pass

    def metrics(self, **numbers):
        pass

    def canceled(self):
        return False


_examples: dict = {}
_examples_lock = threading.Lock()


def _run_builtin(model, params: dict) -> tuple[dict, dict] | None:
    """(output, usage) of a built-in model on the example, computed once per process."""
    # Media models would make files on every docs view: their examples are sample shapes.
    if not model.builtin or model.modality not in ("text", "embedding"):
        return None
    from .engine import registry
    from .jobs import validate_params

    key = (model.slug, model.backend, json.dumps(params, sort_keys=True))
    with _examples_lock:
        if key not in _examples:
            result = registry.backend_for(model).run(validate_params(model, params), _NullEmitter())
            _examples[key] = (result.output, result.usage)
    return _examples[key]


def example_response(model, base_url: str) -> dict:
    """The body a successful call returns, for this model's modality."""
    params = example_params(model)
    ran = _run_builtin(model, params)
    if ran is None:
        sample = json.loads(json.dumps(SAMPLE_OUTPUT[model.modality]).replace("{base}", base_url))
        usage = sample.pop("usage", {})
        output = sample
    else:
        output, usage = ran
    cost = ledger.fmt(pricing.charge(model, usage))
    if model.modality == "embedding":
        vectors = output.get("embeddings", [])
        return {
            "object": "list",
            "id": EXAMPLE_ID,
            "model": model.slug,
            # Each vector cut to its first 4 numbers here, to keep the page short.
            "data": [
                {"object": "embedding", "index": i, "embedding": [round(x, 4) for x in v[:4]]}
                for i, v in enumerate(vectors)
            ],
            "usage": {
                "prompt_tokens": usage.get("prompt_tokens", 0),
                "total_tokens": usage.get("total_tokens", usage.get("prompt_tokens", 0)),
                "cost": cost,
            },
        }
    doc = {
        "request_id": EXAMPLE_ID,
        "model": model.slug,
        "status": "success",
        "created": EXAMPLE_CREATED,
        "progress": 1.0,
        "cost": cost,
        **output,
    }
    if model.modality == "text":
        doc["usage"] = {
            k: usage.get(k, 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")
        }
    return doc


def rate_limit_rows(user) -> list[dict]:
    """Every tier's budgets, with the tiers of the user's active keys marked."""
    mine = set()
    if user is not None and user.is_authenticated:
        mine = {k.tier for k in user.api_keys.all() if k.status == "active"}
    rows = []
    for tier, (per_minute, per_day) in ratelimit.TIERS.items():
        rows.append(
            {
                "tier": tier,
                "submits": f"{per_minute:,}/min, {per_day:,}/day",
                "reads": f"{per_minute * ratelimit.READ_FACTOR:,}/min",
                "mine": tier in mine,
            }
        )
    rows.append(
        {"tier": "unlimited", "submits": "none", "reads": "none", "mine": "unlimited" in mine}
    )
    return rows


def docs_context(model, base_url: str, user) -> dict:
    schema = json_schema(model)
    params = example_params(model)
    response = example_response(model, base_url)
    pending = {
        "request_id": EXAMPLE_ID,
        "model": model.slug,
        "status": "pending",
        "created": EXAMPLE_CREATED,
    }
    async_body = {
        k: v for k, v in snippets.request_body(model, params).items() if k != "wait_for_result"
    }
    return {
        "schema": schema,
        "rows": parameter_rows(schema),
        "pricing": pricing.pricing_document(model),
        "example_request": json.dumps(snippets.request_body(model, params), indent=2),
        "example_response": json.dumps(response, indent=2, ensure_ascii=False),
        "async_request": json.dumps(async_body, indent=2),
        "pending_response": json.dumps(pending, indent=2),
        "poll_request": json.dumps({"request_id": EXAMPLE_ID}, indent=2),
        "snippets": snippets.all_snippets(model, params, base_url),
        "errors": ERRORS,
        "statuses": STATUSES,
        "limits": rate_limit_rows(user),
        "my_tiers": [r["tier"] for r in rate_limit_rows(user) if r["mine"]],
        "wait_seconds": _wait_seconds(),
        "ws_example": f"{base_url.replace('http', 'ws', 1)}/ws/jobs/{EXAMPLE_ID}/",
        "example_uuid": str(uuid.UUID(EXAMPLE_ID)),
    }


def _wait_seconds() -> int:
    from django.conf import settings

    return settings.PLAYGROUND_WAIT_SECONDS
