"""Server-rendered SVG scatter plots (no JavaScript, no plotting library)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from feedback.data_view import Point

PALETTE = ("#2456c7", "#d2691e", "#1e7b34", "#8e44ad", "#c0392b", "#16a085",
           "#7f8c8d", "#b7950b", "#2c3e50", "#e84393")  # fmt: skip
UNKNOWN = "#999999"
#: Marker per kind of point: reference dots, live rings, report crosses.
KINDS = ("reference", "live", "report")


def colours(labels: Sequence[str]) -> dict[str, str]:
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}


def _marker(p: Point, x: float, y: float, colour: str) -> str:
    title = f"<title>{escape(p.kind)}: {escape(p.label or '?')}</title>"
    if p.kind == "reference":
        shape = (
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}" '
            'fill-opacity="0.45">'
        )
        return f"{shape}{title}</circle>"
    if p.kind == "live":
        shape = (
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="none" '
            f'stroke="{colour}" stroke-width="1.5">'
        )
        return f"{shape}{title}</circle>"
    a, b, c, e = x - 5, x + 5, y - 5, y + 5
    d = f"M{a:.1f},{c:.1f}L{b:.1f},{e:.1f}M{a:.1f},{e:.1f}L{b:.1f},{c:.1f}"
    path = f'<path d="{d}" stroke="{colour}" stroke-width="2.5">{title}</path>'
    if p.link:
        return f'<a href="{escape(p.link)}" class="report-point">{path}</a>'
    return path


def scatter_svg(
    points: Sequence[Point],
    *,
    labels: Sequence[str],
    width: int = 760,
    height: int = 520,
    axis_names: tuple[str, str] = ("PC 1", "PC 2"),
) -> str:
    """An inline SVG: reference as dots, live inputs as rings, reports as crosses
    (each a link to its page), coloured by label."""
    pad = 36
    xs = [p.x for p in points] or [0.0]
    ys = [p.y for p in points] or [0.0]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    sx = (width - 2 * pad) / ((x1 - x0) or 1.0)
    sy = (height - 2 * pad) / ((y1 - y0) or 1.0)
    palette = colours(labels)
    order = {k: i for i, k in enumerate(KINDS)}
    marks = [
        _marker(
            p,
            pad + (p.x - x0) * sx,
            height - pad - (p.y - y0) * sy,
            palette.get(p.label or "", UNKNOWN),
        )
        for p in sorted(points, key=lambda p: order.get(p.kind, 0))
    ]
    bottom, mid_x, mid_y = height - pad, width / 2, height / 2
    axes = "".join(
        [
            f'<line x1="{pad}" y1="{bottom}" x2="{width - pad}" y2="{bottom}" '
            'stroke="#bbb"/>',
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{bottom}" stroke="#bbb"/>',
            f'<text x="{mid_x:.0f}" y="{height - 8}" text-anchor="middle" '
            f'font-size="12">{escape(axis_names[0])}</text>',
            f'<text x="12" y="{mid_y:.0f}" text-anchor="middle" font-size="12" '
            f'transform="rotate(-90 12 {mid_y:.0f})">{escape(axis_names[1])}</text>',
        ]
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="scatter" id="projection" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'role="img" aria-label="2-D projection of the data">'
        f"{axes}{''.join(marks)}</svg>"
    )
