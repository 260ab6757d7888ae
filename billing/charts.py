"""Usage charts drawn on the server as inline SVG: no chart JavaScript."""

from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import mark_safe

from .ledger import fmt

# Distinguishable in light and dark mode; the last one is "other".
PALETTE = ["#6366f1", "#14b8a6", "#f59e0b", "#ec4899", "#0ea5e9", "#84cc16", "#a855f7"]
OTHER = "#94a3b8"


def nice_max(value: Decimal) -> Decimal:
    """A round axis maximum at or above `value` (1, 2, 2.5 or 5 × a power of ten)."""
    if value <= 0:
        return Decimal(1)
    exp = value.adjusted()
    for step in (1, 2, Decimal("2.5"), 5, 10):
        top = Decimal(step).scaleb(exp)
        if top >= value:
            return top
    return Decimal(10).scaleb(exp)


def top_series(series: dict, keep: int = len(PALETTE)) -> list[tuple[str, list, str]]:
    """[(label, amounts, colour)]: the biggest `keep - 1` models, the rest summed as "other"."""
    items = list(series.items())
    if len(items) <= keep:
        return [(label, amounts, PALETTE[i]) for i, (label, amounts) in enumerate(items)]
    head, tail = items[: keep - 1], items[keep - 1 :]
    other = [sum(values) for values in zip(*(amounts for _, amounts in tail), strict=True)]
    coloured = [(label, amounts, PALETTE[i]) for i, (label, amounts) in enumerate(head)]
    return coloured + [(f"{len(tail)} other models", other, OTHER)]


def stacked_days(days: list, series: list[tuple[str, list, str]]) -> str:
    """A stacked bar per day; each segment a model, with a tooltip."""
    width, height = 760, 240
    left, right, top, bottom = 56, 8, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum((s[1][i] for s in series), Decimal(0)) for i in range(len(days))]
    ymax = nice_max(max(totals, default=Decimal(0)))
    slot = plot_w / max(len(days), 1)
    bar = max(slot * 0.72, 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Credits charged per day over the last {len(days)} days, by model" '
        'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i in range(5):
        value = ymax * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{fmt(value)}</text>"
        )
    for i, day in enumerate(days):
        x = left + slot * i + (slot - bar) / 2
        y = top + plot_h
        for label, amounts, colour in series:
            amount = amounts[i]
            if not amount:
                continue
            h = float(amount / ymax) * plot_h
            y -= h
            tip = escape(f"{day:%b %-d} · {label}: {fmt(amount)} credits")
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{max(h, 0.5):.1f}" '
                f'fill="{colour}"><title>{tip}</title></rect>'
            )
        if i % 5 == 0 or i == len(days) - 1:
            parts.append(
                f'<text class="axis" x="{left + slot * i + slot / 2:.1f}" y="{height - 8}" '
                f'text-anchor="middle">{day:%b %-d}</text>'
            )
    parts.append(
        f'<line class="baseline" x1="{left}" x2="{width - right}" '
        f'y1="{top + plot_h}" y2="{top + plot_h}"/></svg>'
    )
    return mark_safe("".join(parts))


def horizontal_bars(items: list[tuple[str, Decimal, int]]) -> str:
    """One bar per (label, amount, jobs), longest first."""
    row, label_w, width = 30, 230, 760
    height = row * len(items) + 8
    top = max((amount for _, amount, _ in items), default=Decimal(0))
    scale = nice_max(top)
    plot_w = width - label_w - 150
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="Credits charged per API key over the last 30 days" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, amount, jobs) in enumerate(items):
        y = 4 + i * row
        w = max(float(amount / scale) * plot_w, 1)
        short = label if len(label) <= 34 else label[:33] + "…"
        parts.append(
            f'<text class="label" x="0" y="{y + 18}">{escape(short)}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row - 10}" rx="3" '
            f'fill="{PALETTE[0]}"><title>{escape(label)}: {fmt(amount)} credits, '
            f"{jobs} jobs</title></rect>"
            f'<text class="value" x="{label_w + w + 8:.1f}" y="{y + 18}">{fmt(amount)}'
            f" · {jobs} jobs</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))
