"""Small server-rendered SVG charts for the console (no JavaScript library).

A chart is computed here as geometry (bars, a polyline, labels) and
rendered by `templates/console/dashboard/partials/_chart.html`; every point carries
a `<title>` so hovering shows its exact value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

WIDTH = 640
HEIGHT = 140
PAD_LEFT = 56  # room for the axis labels
PAD_RIGHT = 8
PAD_TOP = 10
PAD_BOTTOM = 22


@dataclass(frozen=True)
class Mark:
    """One day: a bar (x, y, width, height) or a point (x, y), and its label."""

    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Chart:
    title: str
    kind: str  # "bars" or "line"
    width: int
    height: int
    marks: list[Mark]
    points: str  # the polyline of a line chart, "x,y x,y …"
    top_label: str
    first_day: str
    last_day: str
    baseline: float
    left: int
    right: int
    empty: bool
    # Every day and its value as text ("—" for none): the table shown beside
    # the chart, for screen readers and for reading exact values.
    rows: tuple[tuple[date, str], ...] = ()


def _scale(values: Sequence[float | None]) -> float:
    top = max((v for v in values if v is not None), default=0.0)
    return top if top > 0 else 1.0


def trend_chart(
    title: str,
    days: Sequence[date],
    values: Sequence[float | Decimal | None],
    *,
    kind: str = "line",
    fmt: Callable[[float], str] = lambda v: f"{v:g}",
) -> Chart:
    """A chart of one value per day. `None` values (no data that day) are
    left out of a line and drawn as no bar."""
    if kind not in ("bars", "line"):
        raise ValueError("kind is bars or line")
    numbers = [None if v is None else float(v) for v in values]
    top = _scale(numbers)
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = inner_w / max(len(days), 1)
    baseline = PAD_TOP + inner_h
    marks = []
    for index, (day, value) in enumerate(zip(days, numbers, strict=True)):
        if value is None:
            continue
        height = inner_h * value / top
        x = PAD_LEFT + slot * index
        label = f"{day.isoformat()}: {fmt(value)}"
        if kind == "bars":
            marks.append(Mark(x + slot * 0.1, baseline - height, slot * 0.8, height, label))
        else:
            marks.append(Mark(x + slot / 2, baseline - height, 0, 0, label))
    return Chart(
        title=title,
        kind=kind,
        width=WIDTH,
        height=HEIGHT,
        marks=marks,
        points=" ".join(f"{m.x:.1f},{m.y:.1f}" for m in marks) if kind == "line" else "",
        top_label=fmt(top) if marks else "",
        first_day=days[0].isoformat() if days else "",
        last_day=days[-1].isoformat() if days else "",
        baseline=baseline,
        left=PAD_LEFT,
        right=WIDTH - PAD_RIGHT,
        empty=not marks,
        rows=tuple(
            (day, "—" if value is None else fmt(value))
            for day, value in zip(days, numbers, strict=True)
        ),
    )


def trend_charts(trend: Sequence[Any]) -> list[Chart]:
    """The dashboard's three charts of a daily trend (`runs.metrics.TrendPoint`s):
    runs per day, error rate (days without runs left out) and cost per
    successful outcome (days without a success left out)."""
    days = [point.day for point in trend]
    return [
        trend_chart(
            "Runs per day", days, [p.runs for p in trend], kind="bars", fmt=lambda v: f"{v:,.0f}"
        ),
        trend_chart(
            "Error rate",
            days,
            [p.error_rate if p.runs else None for p in trend],
            fmt=lambda v: f"{v:.1%}",
        ),
        trend_chart(
            "Cost per successful outcome",
            days,
            [p.cost_per_success for p in trend],
            fmt=lambda v: f"${v:.4f}",
        ),
    ]
