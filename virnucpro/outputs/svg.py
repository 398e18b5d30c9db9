"""Inline SVG charts for report.html: no library, no script, nothing fetched.

Every bar or point carries its number in `data-value` (and its label in `data-label`, its series in
`data-series`), so a test can read the figures back from the rendered page and compare them with the TSVs.
"""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT = 680, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 56
COLORS = {"virus": "#c0392b", "others": "#2e86c1", "unscored": "#95a5a6", "few_chunks": "#f39c12",
          "too_short": "#7f8c8d", "bars": "#34495e", "line": "#16a085"}


def _frame(figure_id: str, title: str, body: list[str], x_label: str, y_label: str, top: float) -> str:
    plot_h = HEIGHT - TOP - BOTTOM
    axes = [f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" stroke="#333"/>',
            f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#333"/>',
            f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end" class="tick">{_number(top)}</text>',
            f'<text x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end" class="tick">0</text>',
            f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" class="title">{escape(title)}</text>',
            f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle" class="axis">{escape(x_label)}</text>',
            f'<text x="14" y="{TOP + plot_h / 2}" text-anchor="middle" class="axis" '
            f'transform="rotate(-90 14 {TOP + plot_h / 2})">{escape(y_label)}</text>']
    return (f'<svg id="{escape(figure_id)}" class="figure" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
            f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
            + "".join(axes + body) + "</svg>")


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.3g}"


def _x_ticks(labels: list[str], slot: float, every: int) -> list[str]:
    y = HEIGHT - BOTTOM + 14
    return [f'<text x="{LEFT + slot * (i + 0.5):.1f}" y="{y}" text-anchor="middle" class="tick">{escape(label)}</text>'
            for i, label in enumerate(labels) if i % every == 0]


def bar_chart(figure_id: str, title: str, labels: list[str], values: list[float], x_label: str, y_label: str) -> str:
    return stacked_bar_chart(figure_id, title, labels, {"bars": values}, x_label, y_label)


def stacked_bar_chart(figure_id: str, title: str, labels: list[str], series: dict[str, list[float]], x_label: str,
                      y_label: str) -> str:
    """One bar per label, the series stacked in the given order."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    top = max(totals + [1])
    slot = plot_w / max(len(labels), 1)
    body = []
    for i, label in enumerate(labels):
        y = TOP + plot_h
        for name, values in series.items():
            height = plot_h * values[i] / top
            y -= height
            body.append(f'<rect class="bar" data-series="{escape(name)}" data-label="{escape(label)}" '
                        f'data-value="{values[i]}" x="{LEFT + slot * i + 1:.1f}" y="{y:.1f}" '
                        f'width="{max(slot - 2, 1):.1f}" height="{height:.1f}" fill="{COLORS.get(name, "#555")}">'
                        f'<title>{escape(label)} {escape(name)}: {values[i]}</title></rect>')
    body += _x_ticks(labels, slot, max(1, len(labels) // 10))
    if len(series) > 1:
        body += _legend(list(series))
    return _frame(figure_id, title, body, x_label, y_label, top)


def _legend(names: list[str]) -> list[str]:
    items = []
    for i, name in enumerate(names):
        x = WIDTH - RIGHT - 110
        y = TOP + 4 + 14 * i
        items.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{COLORS.get(name, "#555")}"/>'
                     f'<text x="{x + 14}" y="{y + 9}" class="tick">{escape(name)}</text>')
    return items


def line_chart(figure_id: str, title: str, xs: list[float], ys: list[float], x_label: str, y_label: str) -> str:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = max(ys + [1])
    span = max((xs[-1] - xs[0]) if len(xs) > 1 else 1, 1e-9)
    points = [(LEFT + plot_w * (x - xs[0]) / span, TOP + plot_h * (1 - y / top)) for x, y in zip(xs, ys)]
    body = []
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        body.append(f'<polyline fill="none" stroke="{COLORS["line"]}" stroke-width="2" points="{path}"/>')
    body += [f'<circle class="point" data-label="{x:g}" data-value="{y}" cx="{px:.1f}" cy="{py:.1f}" r="2.5" '
             f'fill="{COLORS["line"]}"/>' for (x, y), (px, py) in zip(zip(xs, ys), points)]
    if xs:
        body.append(f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - BOTTOM + 14}" text-anchor="end" class="tick">'
                    f'{_number(xs[-1])}</text>')
    return _frame(figure_id, title, body, x_label, y_label, top)
