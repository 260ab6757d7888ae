from django import template

register = template.Library()


@register.filter
def lstrip(value):
    """Leading whitespace removed (a continuation starts with the space after the prompt)."""
    return str(value).lstrip()
