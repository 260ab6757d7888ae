"""The OpenAPI document of /v1, completed from the catalogue each time it is requested.

django-ninja describes the routes; this adds what it cannot know: each endpoint's request body
as a `oneOf` of one schema per model in the catalogue now (`model` a `const`, the rest from
`schemas.py`, the source of truth), the errors each operation can answer with, and the shape
of the main responses.
"""

import copy

from . import catalogue
from .schemas import params_for

REF = "#/components/schemas/{model}"
STATUSES = ["pending", "running", "success", "failed", "canceled"]
MODALITIES = ["text", "image", "video", "audio", "embedding"]
WEBHOOK_EVENTS = ["start", "output", "logs", "completed"]
ERROR_TEXT = {
    400: "Invalid input: `param` names the field (never 422).",
    401: "No API key, or an invalid, revoked or expired one.",
    402: "`insufficient_credits` or `key_spend_cap_reached`.",
    403: "`model_not_allowed` for this key.",
    404: "Not found (another user's object is 404 too); `model_not_found` names `model`.",
    409: "`idempotency_key_reused`, or the request was canceled.",
    413: "The body is larger than PLAYGROUND_MAX_BODY_BYTES.",
    429: "`rate_limited` (with Retry-After) or `concurrency_limited`.",
    500: "Unexpected error; the message holds the request id.",
    502: "`upstream_error`.",
    503: "`engine_unavailable`.",
    504: "`upstream_timeout`.",
}
ENVELOPE = {
    "wait_for_result": {
        "type": "boolean",
        "default": False,
        "description": "Wait for the final status document (202 if the wait ends first).",
    },
    "webhook_url": {
        "type": "string",
        "maxLength": 2000,
        "description": "https URL that receives the job's events (docs/webhooks.md).",
    },
    "webhook_events_filter": {
        "type": "array",
        "minItems": 1,
        "items": {"type": "string", "enum": WEBHOOK_EVENTS},
        "description": 'Events to send; default `["completed"]`.',
    },
}
# OpenAI parameters accepted and ignored (openai_api.IGNORED).
_IGNORED_TYPES = {
    "user": {"type": "string"},
    "presence_penalty": {"type": "number"},
    "frequency_penalty": {"type": "number"},
    "logprobs": {"type": "boolean"},
    "store": {"type": "boolean"},
    "metadata": {
        "type": "object",
        "maxProperties": 16,
        "additionalProperties": {"type": "string", "maxLength": 512},
    },
}
IGNORED = {
    name: {**schema, "description": "Accepted for compatibility; ignored."}
    for name, schema in _IGNORED_TYPES.items()
}
ANY = {"type": "object", "additionalProperties": True}
COMPONENTS = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "code", "param"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "code": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                },
            }
        },
    },
    "StatusDocument": {
        "type": "object",
        "required": ["request_id", "model", "status", "created", "progress"],
        "properties": {
            "request_id": {"type": "string", "format": "uuid"},
            "model": {"type": "string"},
            "status": {"type": "string", "enum": STATUSES},
            "created": {"type": "integer"},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "queue_position": {"type": "integer", "minimum": 0},
            "cost": {"type": "string", "pattern": r"^\d+(\.\d+)?$"},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            },
            "text": {"type": "string"},
            "usage": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
        "additionalProperties": True,
    },
    "Submitted": {
        "type": "object",
        "required": ["request_id", "model", "status", "created"],
        "properties": {
            "request_id": {"type": "string", "format": "uuid"},
            "model": {"type": "string"},
            "status": {"type": "string", "enum": ["pending"]},
            "created": {"type": "integer"},
        },
    },
    "Poll": {
        "type": "object",
        "required": ["request_id"],
        "properties": {
            "request_id": {"type": "string"},
            "wait_for_result": ENVELOPE["wait_for_result"],
        },
        "additionalProperties": False,
    },
    "RequestList": {
        "type": "object",
        "required": ["object", "data", "has_more", "next_cursor"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/StatusDocument"}},
            "has_more": {"type": "boolean"},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
    "Model": {
        "type": "object",
        "required": [
            "id",
            "object",
            "created",
            "owned_by",
            "name",
            "description",
            "modality",
            "endpoint",
            "pricing",
            "parameters",
        ],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "modality": {
                "type": "string",
                "enum": ["text", "image", "video", "audio", "embedding"],
            },
            "endpoint": {"type": "string"},
            "pricing": {"type": "object", "additionalProperties": {"type": "string"}},
            "parameters": {"type": "object"},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
        },
    },
    "Batch": {
        "type": "object",
        "required": ["id", "object", "model", "status", "created", "counts", "data"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "object": {"const": "batch"},
            "model": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "running", "completed"]},
            "created": {"type": "integer"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "data": {"type": "array", "items": {"type": "object", "required": ["index", "status"]}},
        },
    },
    "WebhookDeliveries": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "event", "url", "attempt", "status_code", "ok", "created"],
                    "properties": {
                        "id": {"type": "string"},
                        "event": {"type": "string", "enum": WEBHOOK_EVENTS},
                        "url": {"type": "string"},
                        "attempt": {"type": "integer", "minimum": 1},
                        "status_code": {"type": ["integer", "null"]},
                        "ok": {"type": "boolean"},
                        "duration_ms": {"type": "number"},
                        "error": {"type": ["string", "null"]},
                        "created": {"type": "integer"},
                    },
                },
            },
        },
    },
    "WebhookSecret": {
        "type": "object",
        "required": ["secret"],
        "properties": {"secret": {"type": "string", "pattern": "^whsec_"}},
    },
}
# With `stream: true`: each server-sent event's `data` is a JSON chunk, the last `[DONE]`.
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
    "description": "One server-sent event: `data` is a JSON chunk, or `[DONE]` at the end.",
}
SUBMIT_ERRORS = [400, 401, 402, 403, 404, 413, 429, 500, 503]
OPENAI_ERRORS = [*SUBMIT_ERRORS, 409, 502, 504]
# (method, path) -> (error statuses, 200 response schema or content, extra success statuses)
OPERATIONS = {
    ("get", "/v1/models"): ([401, 429, 500], "ModelList"),
    ("get", "/v1/models/{model_id}"): ([401, 403, 404, 429, 500], "Model"),
    ("get", "/v1/requests"): ([400, 401, 429, 500], "RequestList"),
    ("get", "/v1/requests/{request_id}"): ([401, 404, 429, 500], "StatusDocument"),
    ("post", "/v1/requests/{request_id}/cancel"): ([401, 404, 413, 429, 500], "StatusDocument"),
    ("get", "/v1/requests/{request_id}/webhooks"): ([401, 404, 429, 500], "WebhookDeliveries"),
    ("get", "/v1/webhooks/secret"): ([401, 429, 500], "WebhookSecret"),
    ("post", "/v1/webhooks/secret/rotate"): ([401, 413, 429, 500], "WebhookSecret"),
    ("get", "/v1/user/profile"): ([401, 402, 429, 500], None),
    ("get", "/v1/usage"): ([400, 401, 429, 500], None),
    ("post", "/v1/batch/completions"): (SUBMIT_ERRORS, "Batch"),
    ("get", "/v1/batch/{batch_id}"): ([401, 404, 429, 500], "Batch"),
    ("post", "/v1/batch/{batch_id}/cancel"): ([401, 404, 413, 429, 500], "Batch"),
    ("post", "/v1/chat/completions"): (OPENAI_ERRORS, None),
    ("post", "/v1/completions"): (OPENAI_ERRORS, None),
    ("post", "/v1/embeddings"): (OPENAI_ERRORS, None),
}


def _model_schema(model, components: dict, extra: dict, drop=(), required=()) -> dict:
    """The model's parameters as a request body: `model` a const, plus the endpoint's extras."""
    schema = params_for(model).model_json_schema(ref_template=REF)
    components.update(schema.pop("$defs", {}))
    schema["properties"] = {
        "model": {"const": model.slug, "type": "string"},
        **{k: v for k, v in schema["properties"].items() if k not in drop},
        **extra,
    }
    schema["required"] = ["model", *schema.get("required", []), *required]
    schema["title"] = f"{schema.get('title', 'Params')} ({model.slug})"
    schema["additionalProperties"] = False
    return schema


def _text_variants(schema: dict) -> dict:
    """`prompt` or `messages`, exactly one (the schema's model validator, in JSON Schema)."""
    props = schema["properties"]
    for name, kind in (("prompt", "string"), ("messages", "array")):
        if name in props:
            # null is the "not given" default; a body sends one of the two.
            options = [o for o in props[name].get("anyOf", []) if o.get("type") == kind]
            if options:
                props[name] = {
                    **{k: v for k, v in props[name].items() if k != "anyOf"},
                    **options[0],
                }
                props[name].pop("default", None)
    if "prompt" in props and "messages" in props:
        schema["oneOf"] = [{"required": ["prompt"]}, {"required": ["messages"]}]
    return schema


def _bodies(components: dict) -> dict[tuple[str, str], list[dict]]:
    """(method, path) -> one request schema per model in the catalogue."""
    bodies: dict[tuple[str, str], list[dict]] = {}
    models = list(catalogue.visible_models())
    for model in models:
        name = model.slug
        try:
            params_for(model)
        except ValueError:
            continue  # a modality without a parameter schema yet
        if model.modality == "embedding":
            bodies.setdefault(("post", "/v1/embeddings"), []).append(
                _model_schema(model, components, {**IGNORED, **_webhook_only()})
            )
            continue
        endpoint = ("post", model.endpoint)
        bodies.setdefault(endpoint, []).append(
            _text_variants(_model_schema(model, components, ENVELOPE))
            if model.modality == "text"
            else _model_schema(model, components, ENVELOPE)
        )
        if model.modality != "text":
            continue
        stream = {
            "stream": {"type": "boolean", "default": False},
            "stream_options": {
                "type": "object",
                "properties": {"include_usage": {"type": "boolean"}},
                "additionalProperties": False,
            },
            "n": {"const": 1, "type": "integer", "description": "Only 1 is supported."},
            "max_completion_tokens": {"type": "integer", "minimum": 1},
            **IGNORED,
            **_webhook_only(),
        }
        chat = _text_variants(
            _model_schema(model, components, stream, drop=("prompt",), required=["messages"])
        )
        chat["title"] = f"Chat ({name})"
        bodies.setdefault(("post", "/v1/chat/completions"), []).append(chat)
        completion = _model_schema(
            model, components, stream, drop=("messages",), required=["prompt"]
        )
        completion["properties"]["prompt"] = {
            "anyOf": [
                {"type": "string", "maxLength": 200_000},
                {
                    "type": "array",
                    "items": {"type": "string", "maxLength": 200_000},
                    "minItems": 1,
                    "maxItems": 1,
                },
            ]
        }
        completion["title"] = f"Completion ({name})"
        bodies.setdefault(("post", "/v1/completions"), []).append(completion)
        batch = _model_schema(
            model,
            components,
            {
                "prompts": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 500,
                    "items": {
                        "anyOf": [
                            {"type": "string", "maxLength": 200_000},
                            {"type": "array", "items": {"$ref": REF.format(model="Message")}},
                        ]
                    },
                },
                **ENVELOPE,
            },
            drop=("prompt", "messages"),
            required=["prompts"],
        )
        batch["title"] = f"Batch ({name})"
        bodies.setdefault(("post", "/v1/batch/completions"), []).append(batch)
    for modality in ("text", "image", "video", "audio"):
        bodies.setdefault(("post", f"/v1/generate-{modality}"), []).append(
            {"$ref": REF.format(model="Poll")}
        )
    return bodies


def _webhook_only() -> dict:
    return {k: v for k, v in ENVELOPE.items() if k.startswith("webhook")}


def _json(schema_name: str | None) -> dict:
    schema = {"$ref": REF.format(model=schema_name)} if schema_name else ANY
    return {"application/json": {"schema": schema}}


def complete(schema: dict) -> dict:
    """Add request bodies, errors and response shapes to ninja's document."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(copy.deepcopy(COMPONENTS))
    bodies = _bodies(components)
    error = {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            key = (method, path)
            if path.startswith("/v1/generate-"):
                statuses, ok = [*SUBMIT_ERRORS, 409], None
                operation["responses"] = {
                    "200": {
                        "description": "Submitted (`Submitted`) or a status document (poll, wait).",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "anyOf": [
                                        {"$ref": REF.format(model="Submitted")},
                                        {"$ref": REF.format(model="StatusDocument")},
                                    ]
                                }
                            }
                        },
                    },
                    "202": {
                        "description": "The wait ended before the job did: its current document.",
                        "content": _json("StatusDocument"),
                    },
                }
                operation["parameters"] = [
                    *operation.get("parameters", []),
                    {
                        "in": "header",
                        "name": "Idempotency-Key",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        "description": "One job per key and body, per account, for 24 h.",
                    },
                ]
            else:
                statuses, ok = OPERATIONS.get(key, ([400, 401, 404, 429, 500], None))
                content = _json(ok)
                if path in ("/v1/chat/completions", "/v1/completions"):
                    content["text/event-stream"] = {"schema": SSE_EVENT}
                operation["responses"] = {"200": {"description": "OK", "content": content}}
                if path == "/v1/batch/completions":
                    operation["responses"]["202"] = {
                        "description": "The wait ended before every item did.",
                        "content": _json("Batch"),
                    }
            for status in statuses:
                operation["responses"][str(status)] = {
                    "description": ERROR_TEXT[status],
                    "content": error,
                }
            variants = bodies.get(key)
            if variants is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"oneOf": variants}}},
                }
            elif method == "post":
                operation["requestBody"] = {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "additionalProperties": False}
                        }
                    },
                }
    return schema
