"""Charts as server-drawn SVG: shapes computed here, drawn by the page's template with
classes from `app.css` (no script, no inline style, so the CSP holds and a screen
reader gets the figures from the tables beside each chart)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 28


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    css: str
    points: str  # the polyline's "x,y x,y ..."
    total: int


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    y: float
    label: str


@dataclass(frozen=True, slots=True)
class LineChart:
    width: int
    height: int
    lines: tuple[Line, ...]
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    left: int
    bottom: float
    right: float


def _nice_max(value: int) -> int:
    if value <= 4:
        return 4
    step = 10 ** int(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if m * step >= value:
            return int(m * step)
    return value


def line_chart(
    labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[int]]]
) -> LineChart:
    """`series`: (name, css class, one value per label)."""
    top = _nice_max(max((max(v, default=0) for _, _, v in series), default=0))
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = max(len(labels) - 1, 1)

    def x(i: int) -> float:
        return round(LEFT + inner_w * i / n, 1)

    def y(v: int) -> float:
        return round(TOP + inner_h * (1 - v / top), 1)

    lines = tuple(
        Line(name, css, " ".join(f"{x(i)},{y(v)}" for i, v in enumerate(values)), sum(values))
        for name, css, values in series
    )
    y_ticks = tuple(Tick(LEFT - 6, y(top * k // 4), f"{top * k // 4:,}") for k in range(5))
    picks = sorted({0, len(labels) // 2, len(labels) - 1}) if labels else []
    x_ticks = tuple(Tick(x(i), HEIGHT - 8, labels[i]) for i in picks)
    return LineChart(WIDTH, HEIGHT, lines, y_ticks, x_ticks, LEFT, y(0), WIDTH - RIGHT)


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: int
    width: float  # percent of the widest
    css: str


def bars(items: Sequence[tuple[str, int]], css: str) -> list[Bar]:
    """Horizontal bars (drawn as SVG rectangles in percent of their row)."""
    top = max((v for _, v in items), default=0) or 1
    return [Bar(label, v, round(100 * v / top, 1), css) for label, v in items]
