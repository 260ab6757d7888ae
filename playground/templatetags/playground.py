from django import template

register = template.Library()


@register.filter
def lstrip(value):
    """Leading whitespace removed (a continuation starts with the space after the prompt)."""
    return str(value).lstrip()


@register.filter
def seconds(value):
    """A duration in seconds as people read it: 85 ms, 1.4 s, 2 min 5 s; — when unknown."""
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    return f"{int(value // 60)} min {int(value % 60)} s"


@register.filter
def embedding_summary(vectors):
    dims = len(vectors[0]) if vectors else 0
    lines = [f"{len(vectors)} vector(s) of {dims} numbers"]
    for vector in vectors[:8]:
        lines.append("[" + ", ".join(f"{x:.4f}" for x in vector[:8]) + ", …]")
    return "\n".join(lines)


@register.filter
def pretty_json(value):
    import json

    return json.dumps(value, indent=2, ensure_ascii=False)


@register.filter
def lookup(mapping, key):
    return (mapping or {}).get(key, "")


@register.filter
def money(value):
    """A Decimal amount as the contract writes it ("0.00064", "2")."""
    from billing.ledger import fmt

    return "—" if value is None else fmt(value)


@register.filter
def codespans(text):
    """`code` spans of a plain text as <code> (the rest escaped)."""
    from playground.forms import _help_html

    return _help_html(str(text))
