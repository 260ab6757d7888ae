"""The parameter form, generated from the model's JSON Schema that the API validates with."""

import json
import re

from django.utils.html import escape
from django.utils.safestring import mark_safe

TEXTAREAS = {"prompt", "negative_prompt", "input"}
# Shown up front; every other parameter sits under "More parameters".
MAIN = {"prompt", "negative_prompt", "input", "image", "image_url", "max_tokens", "temperature"}


def _help_html(text: str) -> str:
    """A schema description with its `code` spans as <code>."""
    return mark_safe(re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text)))


def _kind(prop: dict) -> str:
    types = {p.get("type") for p in prop.get("anyOf", [prop])} - {"null", None}
    if "array" in types and "string" in types:
        return "list"
    if "array" in types or "object" in types:
        return "json"
    return types.pop() if len(types) == 1 else "string"


def form_fields(schema: dict, values: dict | None = None) -> list[dict]:
    """What the template needs to draw one control per parameter."""
    values = values or {}
    fields = []
    for name, prop in schema.get("properties", {}).items():
        kind = _kind(prop)
        value = values.get(name, prop.get("default"))
        widget = {"integer": "number", "number": "number", "boolean": "checkbox"}.get(kind, "text")
        if name in TEXTAREAS:
            widget = "textarea"
        elif kind == "json":
            widget = "json"
            value = json.dumps(value, indent=1) if value not in (None, "") else ""
        elif kind == "list" and isinstance(value, list):
            value = ", ".join(value)
        fields.append(
            {
                "name": name,
                "label": name.replace("_", " ").capitalize(),
                "widget": widget,
                "value": "" if value is None else value,
                "help": _help_html(prop.get("description", "")),
                "min": prop.get("minimum", prop.get("exclusiveMinimum")),
                "max": prop.get("maximum"),
                "step": "1" if kind == "integer" else "any",
                "advanced": name not in MAIN,
            }
        )
    return fields


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
