"""Small inline SVG charts for the web page: drawn on the server, so the page needs no network."""

from __future__ import annotations

from html import escape

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def line_chart(
    series: dict[str, list[float | None]], labels: list[str], *, title: str, width: int = 640, height: int = 240
) -> str:
    """One line per series over `labels` (x), values in [0, 1] scaled to the chart; None leaves a gap."""
    left, right, top, bottom = 40, 120, 24, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(1, len(labels) - 1)

    def x(i: int) -> float:
        return left + i * step if len(labels) > 1 else left + plot_w / 2

    def y(v: float) -> float:
        return top + plot_h * (1 - max(0.0, min(1.0, v)))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" class="chart">',
        f'<text x="{left}" y="14" font-size="13">{escape(title)}</text>',
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="4" y="{y(tick) + 4:.1f}" font-size="10">{tick:.2f}</text>')
    for i, label in enumerate(labels):
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - 10}" font-size="10" text-anchor="middle">{escape(label)}</text>'
        )
    for n, (name, values) in enumerate(series.items()):
        colour = _COLOURS[n % len(_COLOURS)]
        points = [(x(i), y(v)) for i, v in enumerate(values) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for px, py in points:
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"/>')
        parts.append(
            f'<text x="{left + plot_w + 10}" y="{top + 14 * (n + 1)}" font-size="11" fill="{colour}">'
            f"{escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(groups: dict[str, dict[str, float]], *, title: str, width: int = 640, height: int = 240) -> str:
    """Grouped bars: for each metric (x), one bar per group (e.g. candidate vs champion), values in [0, 1]."""
    metrics = sorted({m for values in groups.values() for m in values})
    left, top, bottom = 40, 24, 30
    plot_w, plot_h = width - left - 130, height - top - bottom
    slot = plot_w / max(1, len(metrics))
    bar = slot * 0.8 / max(1, len(groups))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" class="chart">',
        f'<text x="{left}" y="14" font-size="13">{escape(title)}</text>',
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#999"/>',
    ]
    for tick in (0.25, 0.5, 0.75, 1):
        tick_y = top + plot_h * (1 - tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{tick_y:.1f}" y2="{tick_y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="4" y="{tick_y + 4:.1f}" font-size="10">{tick:.2f}</text>')
    for i, metric in enumerate(metrics):
        parts.append(
            f'<text x="{left + slot * (i + 0.5):.1f}" y="{height - 10}" font-size="10" '
            f'text-anchor="middle">{escape(metric)}</text>'
        )
        for g, (group, values) in enumerate(groups.items()):
            value = values.get(metric)
            if value is None:
                continue
            h = plot_h * max(0.0, min(1.0, value))
            bx = left + slot * i + slot * 0.1 + g * bar
            parts.append(
                f'<rect x="{bx:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{_COLOURS[g % len(_COLOURS)]}"><title>{escape(group)} {escape(metric)} '
                f"{value:.3f}</title></rect>"
            )
    for g, group in enumerate(groups):
        parts.append(
            f'<text x="{left + plot_w + 10}" y="{top + 14 * (g + 1)}" font-size="11" '
            f'fill="{_COLOURS[g % len(_COLOURS)]}">{escape(group)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
