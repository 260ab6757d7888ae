"""The parameter form, generated from the model's JSON Schema that the API validates with."""

import json
import re

from django.utils.html import escape
from django.utils.safestring import mark_safe
from pydantic import ValidationError

from .errors import loc_to_param
from .schemas import params_for

TEXTAREAS = {"prompt", "negative_prompt", "input", "text"}
# Media inputs by name, for schemas that do not say `format: uri` or `contentMediaType`.
MEDIA_NAMES = {"image", "image_url", "audio", "audio_url", "video", "video_url", "mask", "mask_url"}
# Shown up front; every other parameter sits under "More parameters".
MAIN = {"prompt", "negative_prompt", "input", "max_tokens", "temperature"} | MEDIA_NAMES


def _help_html(text: str) -> str:
    """A schema description with its `code` spans as <code>."""
    return mark_safe(re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text)))


def _variants(prop: dict) -> list[dict]:
    return [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]


def _kind(prop: dict) -> str:
    types = {p.get("type") for p in _variants(prop)} - {None}
    if "array" in types and "string" in types:
        return "list"
    if "array" in types or "object" in types:
        return "json"
    return types.pop() if len(types) == 1 else "string"


def _bound(prop: dict, *names):
    for variant in _variants(prop):
        for name in names:
            if variant.get(name) is not None:
                return variant[name]
    return None


def _media_accept(name: str, prop: dict) -> str | None:
    """The file types a media input takes ("image/*"), or None for a non-media field."""
    variants = _variants(prop)
    media_type = next((v["contentMediaType"] for v in variants if "contentMediaType" in v), None)
    if media_type:
        return media_type
    is_uri = any(v.get("format") == "uri" for v in variants)
    if not is_uri and name not in MEDIA_NAMES:
        return None
    base = name.removesuffix("_url")
    return f"{base}/*" if base in ("image", "audio", "video") else "image/*,audio/*,video/*"


def widget_for(name: str, prop: dict) -> str:
    kind = _kind(prop)
    if _media_accept(name, prop):
        return "media"
    if name == "seed" and kind == "integer":
        return "seed"
    if any("enum" in v for v in _variants(prop)):
        return "select"
    if kind in ("integer", "number"):
        low, high = _bound(prop, "minimum", "exclusiveMinimum"), _bound(prop, "maximum")
        return "range" if low is not None and high is not None else "number"
    if kind == "boolean":
        return "checkbox"
    if name in TEXTAREAS:
        return "textarea"
    return "json" if kind == "json" else "text"


def form_fields(schema: dict, values: dict | None = None, errors: dict | None = None) -> list:
    """What the template needs to draw one control per parameter."""
    values, errors = values or {}, errors or {}
    required = set(schema.get("required", []))
    fields = []
    for name, prop in schema.get("properties", {}).items():
        kind = _kind(prop)
        widget = widget_for(name, prop)
        value = values.get(name, prop.get("default"))
        if widget == "json":
            value = json.dumps(value, indent=1) if value not in (None, "") else ""
        elif kind == "list" and isinstance(value, list):
            value = "\n".join(value) if name in TEXTAREAS else ", ".join(value)
        low = _bound(prop, "minimum", "exclusiveMinimum")
        high = _bound(prop, "maximum")
        step = "1" if kind == "integer" else "0.01" if high is not None and high <= 10 else "any"
        fields.append(
            {
                "name": name,
                "label": prop.get("title") or name.replace("_", " ").capitalize(),
                "widget": widget,
                "kind": kind,
                "value": "" if value is None else value,
                "default": prop.get("default"),
                "help": _help_html(prop.get("description", "")),
                "required": name in required,
                "min": low,
                "max": high,
                "step": step,
                "choices": next((v["enum"] for v in _variants(prop) if "enum" in v), []),
                "accept": _media_accept(name, prop),
                "max_bytes": inline_file_limit(),
                "error": errors.get(name, ""),
                "advanced": name not in MAIN and name not in required,
            }
        )
    return fields


def inline_file_limit() -> int:
    """The largest file a form sends inline: its base64 data: URI must fit a JSON body."""
    from django.conf import settings

    return settings.PLAYGROUND_MAX_BODY_BYTES * 3 // 4 - 4096


def parse_form(schema: dict, data) -> dict:
    """Form strings → JSON values by the schema's types; empty means 'use the default'."""
    params = {}
    for name, prop in schema.get("properties", {}).items():
        kind = _kind(prop)
        raw = data.get(name)
        if kind == "boolean":
            params[name] = raw in ("on", "true", "1")
            continue
        if raw is None or raw.strip() == "":
            continue
        if kind == "integer":
            params[name] = _number(raw, int)
        elif kind == "number":
            params[name] = _number(raw, float)
        elif kind == "json":
            try:
                params[name] = json.loads(raw)
            except ValueError:
                params[name] = raw  # left to the schema to reject, naming the field
        elif kind == "list" and name in TEXTAREAS:
            params[name] = raw  # one text, commas and all
        elif kind == "list":
            params[name] = [part.strip() for part in raw.split(",") if part.strip()]
        else:
            params[name] = raw
    return params


def _number(raw: str, cast):
    try:
        return cast(raw)
    except ValueError:
        return raw


def field_errors(model, values: dict) -> tuple[dict | None, dict, str]:
    """(params or None, {field: message}, form-wide message) by the API's own validation."""
    try:
        params = params_for(model).model_validate(values)
    except ValidationError as exc:
        errors, general = {}, ""
        for error in exc.errors():
            message = error.get("msg", "invalid value").removeprefix("Value error, ")
            if error.get("type") == "extra_forbidden":
                message = "unknown parameter"
            param = loc_to_param(error.get("loc", ()))
            if param:
                errors.setdefault(param.split(".")[0], message)
            elif not general:
                general = message
        return None, errors, general
    return params.model_dump(mode="json"), {}, ""
