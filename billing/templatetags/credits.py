from django import template

from billing.ledger import fmt

register = template.Library()


@register.filter
def credits(amount) -> str:
    """A money amount as the contract writes it: no exponent, no trailing zeros."""
    return "" if amount is None else fmt(amount)
