"""The price rules: the worst-case hold at submit and the exact charge from usage."""

from decimal import Decimal

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
    return charge(model, usage)


def pricing_document(model) -> dict:
    return {
        "currency": "credits",
        "per_request": fmt(model.per_request),
        "per_1k_input_tokens": fmt(model.per_1k_input),
        "per_1k_output_tokens": fmt(model.per_1k_output),
        "per_image": fmt(model.per_image),
        "per_second": fmt(model.per_second),
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
