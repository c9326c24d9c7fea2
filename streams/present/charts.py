"""Inline SVG charts for the HTML report, drawn in Python: no JavaScript, no network.

Every chart is one ``<svg class="chart">`` with a title, both axes with their labels (units
included by the caller), tick labels and a ``<title>`` for screen readers. Data marks carry
``class="mark"`` (bars, points, line paths) so a test can check each chart drew something.
A value of ``None`` (an undefined ratio) draws no mark; the caller footnotes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape
from typing import Final

__all__ = ["PALETTE", "bar_chart", "grouped_bar_chart", "line_chart", "nice_ticks", "scatter"]

Fmt = Callable[[float], str]

PALETTE: Final = ("#1f4e79", "#2a9d8f", "#e76f51", "#8e6c8a", "#e9c46a", "#6c757d", "#264653")
POSITIVE: Final = "#2a9d8f"
NEGATIVE: Final = "#c0392b"

_W, _H = 640, 340
_LEFT, _RIGHT, _TOP, _BOTTOM = 78, 24, 62, 70


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (about ``count`` of them)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        lo, hi = 0.0, 1.0
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value < hi + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks


class _Frame:
    """Plot area and scales of one chart."""

    def __init__(self, y_ticks: list[float]) -> None:
        self.x0, self.x1 = _LEFT, _W - _RIGHT
        self.y0, self.y1 = _H - _BOTTOM, _TOP
        self.lo, self.hi = y_ticks[0], y_ticks[-1]
        self.y_ticks = y_ticks

    def y(self, value: float) -> float:
        return self.y0 - (value - self.lo) / (self.hi - self.lo) * (self.y0 - self.y1)


def _open(chart_id: str, title: str) -> list[str]:
    t = escape(title)
    return [
        f'<svg class="chart" data-chart="{escape(chart_id)}" viewBox="0 0 {_W} {_H}" '
        f'role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{t}</title>",
        f'<text class="chart-title" x="{_LEFT}" y="24">{t}</text>',
    ]


def _y_axis(frame: _Frame, label: str, fmt: Fmt) -> list[str]:
    out = []
    for tick in frame.y_ticks:
        y = frame.y(tick)
        grid = "axis" if tick == 0 else "grid"
        out.append(
            f'<line class="{grid}" x1="{frame.x0}" x2="{frame.x1}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        out.append(
            f'<text class="tick" x="{frame.x0 - 8}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(fmt(tick))}</text>"
        )
    out.append(
        f'<line class="axis" x1="{frame.x0}" x2="{frame.x0}" y1="{frame.y1}" y2="{frame.y0}"/>'
    )
    mid = (frame.y0 + frame.y1) / 2
    out.append(
        f'<text class="axis-label" transform="translate(16 {mid:.1f}) rotate(-90)" '
        f'text-anchor="middle">{escape(label)}</text>'
    )
    return out


def _x_label(label: str) -> str:
    x = (_LEFT + _W - _RIGHT) / 2
    return (
        f'<text class="axis-label" x="{x:.1f}" y="{_H - 12}" text-anchor="middle">'
        f"{escape(label)}</text>"
    )


def _x_categories(frame: _Frame, labels: Sequence[str]) -> tuple[list[str], float]:
    band = (frame.x1 - frame.x0) / max(len(labels), 1)
    longest = max((min(len(s), 16) for s in labels), default=0)
    rotate = len(labels) > 8 or longest * 6.2 > band
    out = [f'<line class="axis" x1="{frame.x0}" x2="{frame.x1}" y1="{frame.y0}" y2="{frame.y0}"/>']
    for i, label in enumerate(labels):
        x = frame.x0 + band * (i + 0.5)
        text = escape(label if len(label) <= 16 else label[:15] + "…")
        if rotate:
            out.append(
                f'<text class="tick" text-anchor="end" '
                f'transform="translate({x:.1f} {frame.y0 + 14}) rotate(-30)">{text}</text>'
            )
        else:
            out.append(
                f'<text class="tick" x="{x:.1f}" y="{frame.y0 + 18}" '
                f'text-anchor="middle">{text}</text>'
            )
    return out, band


def _legend(series: Sequence[tuple[str, str]]) -> list[str]:
    out = []
    x = _W - _RIGHT
    for name, color in reversed(series):
        width = 7 * len(name) + 22
        x -= width
        out.append(f'<rect x="{x}" y="34" width="12" height="12" rx="2" fill="{color}"/>')
        out.append(f'<text class="legend" x="{x + 16}" y="44">{escape(name)}</text>')
    return out


def _range(values: Sequence[float | None], zero: bool) -> tuple[float, float]:
    present = [v for v in values if v is not None]
    lo = min(present, default=0.0)
    hi = max(present, default=1.0)
    if zero:
        # Headroom for the value labels drawn beyond the bars' ends.
        lo, hi = min(lo * 1.15, 0.0), max(hi * 1.1, 0.0)
    return lo, hi


def bar_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[float | None],
    x_label: str,
    y_label: str,
    fmt: Fmt,
    value_fmt: Fmt | None = None,
    signed_colors: bool = True,
) -> str:
    """Vertical bars from 0; negative bars red when ``signed_colors``; ``None`` shows "\u2013"."""
    frame = _Frame(nice_ticks(*_range(values, zero=True)))
    out = _open(chart_id, title) + _y_axis(frame, y_label, fmt)
    axis, band = _x_categories(frame, labels)
    zero = frame.y(0)
    for i, value in enumerate(values):
        x = frame.x0 + band * i + band * 0.2
        width = band * 0.6
        if value is None:
            out.append(
                f'<text class="value" x="{x + width / 2:.1f}" y="{zero - 6:.1f}" '
                'text-anchor="middle">\u2013</text>'
            )
            continue
        top, bottom = sorted((frame.y(value), zero))
        color = NEGATIVE if signed_colors and value < 0 else PALETTE[0]
        label = escape((value_fmt or fmt)(value))
        out.append(
            f'<rect class="mark" x="{x:.1f}" y="{top:.1f}" width="{width:.1f}" '
            f'height="{max(bottom - top, 1):.1f}" fill="{color}"><title>{escape(labels[i])}: '
            f"{label}</title></rect>"
        )
        ty = top - 6 if value >= 0 else bottom + 14
        out.append(
            f'<text class="value" x="{x + width / 2:.1f}" y="{ty:.1f}" '
            f'text-anchor="middle">{label}</text>'
        )
    out += axis
    out.append(_x_label(x_label))
    out.append("</svg>")
    return "\n".join(out)


def grouped_bar_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None], str]],
    x_label: str,
    y_label: str,
    fmt: Fmt,
    provisional: Sequence[bool] = (),
) -> str:
    """Side-by-side bars per category, one colour per series, with a legend. The bars of a
    ``provisional`` category (a day still open) are pale and say so."""
    every = [v for _, values, _ in series for v in values]
    frame = _Frame(nice_ticks(*_range(every, zero=True)))
    out = _open(chart_id, title) + _y_axis(frame, y_label, fmt)
    out += _legend([(name, color) for name, _, color in series])
    axis, band = _x_categories(frame, labels)
    zero = frame.y(0)
    width = band * 0.7 / max(len(series), 1)
    for s, (name, values, color) in enumerate(series):
        for i, value in enumerate(values):
            if value is None:
                continue
            x = frame.x0 + band * i + band * 0.15 + width * s
            top, bottom = sorted((frame.y(value), zero))
            open_day = i < len(provisional) and provisional[i]
            kind, pale, note = (
                (" provisional", ' fill-opacity="0.4"', " (provisional)")
                if open_day
                else ("", "", "")
            )
            out.append(
                f'<rect class="mark{kind}" x="{x:.1f}" y="{top:.1f}" width="{width - 2:.1f}" '
                f'height="{max(bottom - top, 1):.1f}" fill="{color}"{pale}>'
                f"<title>{escape(labels[i])}, {escape(name)}: {escape(fmt(value))}{note}</title>"
                "</rect>"
            )
    out += axis
    out.append(_x_label(x_label))
    out.append("</svg>")
    return "\n".join(out)


def scatter(
    chart_id: str,
    title: str,
    points: Sequence[tuple[str, float, float]],
    x_label: str,
    y_label: str,
    fmt: Fmt,
    break_even: bool = True,
) -> str:
    """Labelled points; with ``break_even`` a dashed y = x line (return equals spend)."""
    xs = [p[1] for p in points]
    ys = [p[2] for p in points]
    top = max([*xs, *ys, 0.0]) if break_even else max([*ys, 0.0])
    frame = _Frame(nice_ticks(0.0, top or 1.0))
    x_ticks = frame.y_ticks if break_even else nice_ticks(0.0, max([*xs, 0.0]) or 1.0)
    x_hi = x_ticks[-1]

    def sx(value: float) -> float:
        return frame.x0 + value / x_hi * (frame.x1 - frame.x0)

    out = _open(chart_id, title) + _y_axis(frame, y_label, fmt)
    out.append(
        f'<line class="axis" x1="{frame.x0}" x2="{frame.x1}" y1="{frame.y0}" y2="{frame.y0}"/>'
    )
    for tick in x_ticks:
        out.append(
            f'<text class="tick" x="{sx(tick):.1f}" y="{frame.y0 + 18}" text-anchor="middle">'
            f"{escape(fmt(tick))}</text>"
        )
    if break_even:
        end = min(x_hi, frame.hi)
        out.append(
            f'<line class="break-even" x1="{sx(0):.1f}" y1="{frame.y(0):.1f}" '
            f'x2="{sx(end):.1f}" y2="{frame.y(end):.1f}"/>'
        )
        out.append(
            f'<text class="note" x="{sx(end) - 4:.1f}" y="{frame.y(end) + 14:.1f}" '
            'text-anchor="end">break-even: return = spend</text>'
        )
    placed: list[tuple[float, float, float, float]] = []
    for i, (label, x, y) in enumerate(points):
        color = PALETTE[i % len(PALETTE)]
        px, py = sx(x), frame.y(y)
        out.append(
            f'<circle class="mark" cx="{px:.1f}" cy="{py:.1f}" r="7" fill="{color}">'
            f"<title>{escape(label)}: spend {escape(fmt(x))}, return {escape(fmt(y))}</title>"
            "</circle>"
        )
        lx, ly, anchor = _free_spot(px, py, 6.5 * len(label), placed)
        out.append(
            f'<text class="point-label" x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}">'
            f"{escape(label)}</text>"
        )
    out.append(_x_label(x_label))
    out.append("</svg>")
    return "\n".join(out)


def _free_spot(
    px: float, py: float, width: float, placed: list[tuple[float, float, float, float]]
) -> tuple[float, float, str]:
    """A label position next to a point that overlaps no label placed before (greedy)."""
    candidates = [(10, -8), (10, 16), (-10, -8), (-10, 16), (10, -22), (10, 30), (10, 44)]
    for dx, dy in candidates:
        left = px + dx if dx > 0 else px + dx - width
        box = (left, py + dy - 11, left + width, py + dy + 2)
        if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in placed):
            placed.append(box)
            return px + dx, py + dy, "start" if dx > 0 else "end"
    return px + 10, py - 8, "start"


def line_chart(
    chart_id: str,
    title: str,
    x_labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None], str]],
    x_label: str,
    y_label: str,
    fmt: Fmt,
    zero_based: bool = True,
    y_range: tuple[float, float] | None = None,
    provisional: Sequence[bool] = (),
) -> str:
    """One line per series over the ``x_labels`` (days); a ``None`` breaks the line. A
    point whose day is ``provisional`` (still open) is drawn hollow and says so."""
    every = [v for _, values, _ in series for v in values]
    lo, hi = y_range if y_range is not None else _range(every, zero=zero_based)
    frame = _Frame(nice_ticks(lo, hi))
    out = _open(chart_id, title) + _y_axis(frame, y_label, fmt)
    if len(series) > 1:
        out += _legend([(name, color) for name, _, color in series])
    axis, band = _x_categories(frame, x_labels)
    for name, values, color in series:
        segments: list[list[tuple[float, float]]] = [[]]
        for i, value in enumerate(values):
            if value is None:
                segments.append([])
                continue
            segments[-1].append((frame.x0 + band * (i + 0.5), frame.y(value)))
        for segment in segments:
            if len(segment) > 1:
                d = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in segment)
                out.append(f'<path class="mark line" d="{d}" stroke="{color}"/>')
        for i, value in enumerate(values):
            if value is None:
                continue
            x, y = frame.x0 + band * (i + 0.5), frame.y(value)
            open_day = i < len(provisional) and provisional[i]
            paint = (
                f'fill="#fff" stroke="{color}" stroke-width="2"' if open_day else f'fill="{color}"'
            )
            out.append(
                f'<circle class="mark{" provisional" if open_day else ""}" cx="{x:.1f}" '
                f'cy="{y:.1f}" r="4" {paint}>'
                f"<title>{escape(name)}, {escape(x_labels[i])}: {escape(fmt(value))}"
                f"{' (provisional)' if open_day else ''}</title></circle>"
            )
    out += axis
    out.append(_x_label(x_label))
    out.append("</svg>")
    return "\n".join(out)
