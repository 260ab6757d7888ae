"""The price rules: the worst-case hold at submit and the exact charge from usage."""

from decimal import Decimal, InvalidOperation

from billing.ledger import fmt, round_money

THOUSAND = Decimal(1000)


def charge(model, usage: dict) -> Decimal:
    """The exact cost of a finished job from its usage."""
    amount = model.per_request
    amount += model.per_1k_input * Decimal(usage.get("prompt_tokens", 0)) / THOUSAND
    amount += model.per_1k_output * Decimal(usage.get("completion_tokens", 0)) / THOUSAND
    amount += model.per_image * Decimal(usage.get("images", 0))
    amount += model.per_second * Decimal(str(usage.get("seconds", 0)))
    return round_money(amount)


def worst_case(model, params: dict, prompt_tokens: int) -> Decimal:
    """The most a job with these parameters can cost: what is held at submit."""
    usage = {"prompt_tokens": prompt_tokens}
    if model.modality == "text":
        usage["completion_tokens"] = params["max_tokens"]
    elif model.modality == "image":
        usage["images"] = params["num_images"]
    elif model.modality == "video":
        usage["seconds"] = round(params["num_frames"] / params["fps"], 3)
    elif model.modality == "audio":
        usage["seconds"] = media_seconds_bound(model, params)
    return charge(model, usage)


def media_seconds_bound(model, params: dict) -> float:
    """The most seconds of audio a job can make: the asked duration, or for speech a bound
    from the text's length (an actual charge above the hold is capped at the hold)."""
    if "duration" in params:
        return params["duration"]
    from .engine.audiogen import speech_seconds_bound

    return speech_seconds_bound(params)


def pricing_document(model) -> dict:
    return {
        "currency": "credits",
        "per_request": fmt(model.per_request),
        "per_1k_input_tokens": fmt(model.per_1k_input),
        "per_1k_output_tokens": fmt(model.per_1k_output),
        "per_image": fmt(model.per_image),
        "per_second": fmt(model.per_second),
    }


def estimate(model, params: dict) -> dict:
    """The price shown live beside a model's form, from the values typed so far.

    `params`: the form's values as a dict (raw or validated; missing or invalid values fall
    back to the schema's defaults, so a half-filled form still gets a figure). Uses the same
    rules as the hold at submit, so `max` is exactly what `submit_job` would hold for valid
    parameters. Returns strings ready for a template:

        {"max": "0.0128",            # most the job can cost (the hold), decimal string
         "per_request": "0",         # the fixed part
         "prompt_tokens": 3,         # input tokens counted for the hold
         "lines": [("128 output tokens × 0.1 / 1K", "0.0128"), ...],   # non-zero parts
         "text": "at most 0.0128 credits"}
    """
    from pydantic import ValidationError

    from .engine import registry
    from .schemas import json_schema, params_for

    defaults = {
        name: spec["default"]
        for name, spec in json_schema(model).get("properties", {}).items()
        if "default" in spec
    }
    try:
        clean = params_for(model).model_validate(params).model_dump(mode="json")
    except ValidationError:
        clean = {**defaults, **{k: v for k, v in params.items() if v not in (None, "")}}
    try:
        tokens = registry.prompt_tokens_bound(model, clean)
    except Exception:  # an unparseable half-typed value: count no input yet
        tokens = 0
    try:
        max_tokens = int(clean.get("max_tokens") or 0)
    except (TypeError, ValueError):
        max_tokens = int(defaults.get("max_tokens") or 0)
    if "max_tokens" in clean:
        clean["max_tokens"] = max_tokens
    try:
        most = worst_case(model, clean, tokens)
    except (KeyError, TypeError, ValueError, ZeroDivisionError, InvalidOperation):  # unset value
        most = charge(model, {"prompt_tokens": tokens})
    lines = []
    if model.per_request:
        lines.append(("per request", fmt(model.per_request)))
    if model.per_1k_input and tokens:
        part = model.per_1k_input * tokens / THOUSAND
        lines.append((f"{tokens} input tokens × {fmt(model.per_1k_input)} / 1K", fmt(part)))
    if model.per_1k_output and model.modality == "text" and max_tokens:
        part = model.per_1k_output * max_tokens / THOUSAND
        label = f"up to {max_tokens} output tokens × {fmt(model.per_1k_output)} / 1K"
        lines.append((label, fmt(part)))
    rest = most - sum((Decimal(amount) for _, amount in lines), Decimal(0))
    if rest > 0:
        # Images or seconds of media: worst_case knows each modality's parameters.
        unit = "images" if model.modality == "image" else "seconds"
        price = model.per_image if unit == "images" else model.per_second
        lines.append((f"up to {fmt(rest / price) if price else '?'} {unit}", fmt(rest)))
    return {
        "max": fmt(most),
        "per_request": fmt(model.per_request),
        "prompt_tokens": tokens,
        "lines": lines,
        "text": f"at most {fmt(most)} credits" if most else "free",
    }


def headline(model) -> tuple[Decimal, str]:
    """The one price a catalogue card shows and filters on: (amount, unit)."""
    if model.modality == "text":
        return model.per_1k_output, "1K output tokens"
    if model.modality == "embedding":
        return model.per_1k_input, "1K input tokens"
    if model.per_image:
        return model.per_image, "image"
    if model.per_second:
        return model.per_second, "second"
    return model.per_request, "request"
