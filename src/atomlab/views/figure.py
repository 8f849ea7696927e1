"""The common ground of every figure: the figure-dict type, JSON-safe numbers, layouts and colours.

A figure is the plain dict plotly.js takes (``{"data": [...], "layout": {...}}``): built without
importing plotly, so making one costs microseconds and the result goes straight into JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

Figure = dict[str, Any]
"""A plotly figure as a JSON-serialisable dict: ``{"data": [traces], "layout": {...}}``."""

COLORWAY = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
"""Trace colours in order; a run or a signal keeps its colour across every figure it appears in."""

FONT_FAMILY = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
MARGIN = {"l": 64, "r": 24, "t": 48, "b": 48}
SUBPLOT_GAP = 0.06
STACK_GAP = 0.12


def color(k: int) -> str:
    """The ``k``-th colour of :data:`COLORWAY` (cycling)."""
    return COLORWAY[k % len(COLORWAY)]


def number(value: Any) -> float | None:
    """``value`` as a float for JSON, or None (a gap in the chart) when missing or not finite.

    JSON has no NaN or infinity; plotly.js draws ``null`` as a gap, which is what a missing or
    broken sample is. Booleans count as 0/1 (a spec such as "Z Controller Enabled").
    """
    if value is None or isinstance(value, str):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def numbers(values: Iterable[Any]) -> list[float | None]:
    """:func:`number` over a sequence."""
    return [number(v) for v in values]


def fields_of(item: Any) -> dict[str, Any]:
    """A mapping, a dataclass or a pydantic model as a plain dict of its fields (shallow)."""
    if isinstance(item, Mapping):
        return dict(item)
    if is_dataclass(item) and not isinstance(item, type):
        return {name: getattr(item, name) for name in asdict(item)}
    dump = getattr(item, "model_dump", None)
    if callable(dump):
        data = dump(mode="json")
        if isinstance(data, dict):
            return data
    raise TypeError(f"cannot read fields from a {type(item).__name__}; pass a mapping")


def base_layout(title: str | None, *, uirevision: str, height: int | None = None) -> dict[str, Any]:
    """The layout every figure starts from.

    ``uirevision`` is what keeps zoom, pan and legend choices across live updates: plotly.js
    keeps the user's view as long as the figure's ``uirevision`` stays the same.
    """
    layout: dict[str, Any] = {
        "uirevision": uirevision,
        "margin": dict(MARGIN),
        "font": {"family": FONT_FAMILY, "size": 12},
        "colorway": list(COLORWAY),
        "hovermode": "closest",
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "legend": {"orientation": "h", "y": -0.12},
    }
    if title:
        layout["title"] = {"text": title, "x": 0.01, "xanchor": "left"}
    if height is not None:
        layout["height"] = height
    return layout


def axis(title: str | None = None, **extra: Any) -> dict[str, Any]:
    """An axis with a light grid and an optional title."""
    out: dict[str, Any] = {"showgrid": True, "gridcolor": "#e5e5e5", "zeroline": False}
    if title:
        out["title"] = {"text": title}
    out.update(extra)
    return out


def stacked_axes(
    layout: dict[str, Any],
    titles: list[str],
    *,
    x_title: str | None,
    units: list[str] | None = None,
    shared_x: bool = True,
) -> list[tuple[str, str]]:
    """Stack ``len(titles)`` subplots top to bottom; return each one's ``(xref, yref)`` for traces.

    Each panel is named by a label over its top-left corner (long names never collide the way
    rotated axis titles do); ``units`` become the y-axis titles. The bottom panel carries the
    x-axis title; with ``shared_x`` every x-axis follows the first, so zooming one panel zooms
    them all (a strip chart, a signal window).
    """
    n = max(1, len(titles))
    gap = STACK_GAP if n > 1 else 0.0
    height = (1.0 - gap * (n - 1)) / n
    refs: list[tuple[str, str]] = []
    annotations = layout.setdefault("annotations", [])
    for k, title in enumerate(titles):
        suffix = "" if k == 0 else str(k + 1)
        top = 1.0 - k * (height + gap)
        x_extra: dict[str, Any] = {"anchor": f"y{suffix}"}
        if shared_x and k > 0:
            x_extra["matches"] = "x"
        if k < n - 1:
            x_extra["showticklabels"] = False
        layout[f"xaxis{suffix}"] = axis(x_title if k == n - 1 else None, **x_extra)
        unit = units[k] if units and k < len(units) else None
        layout[f"yaxis{suffix}"] = axis(
            unit, domain=[max(0.0, top - height), top], anchor=f"x{suffix}"
        )
        annotations.append(
            {
                "text": f"<b>{title}</b>",
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 0,
                "y": top,
                "xanchor": "left",
                "yanchor": "bottom",
            }
        )
        refs.append((f"x{suffix}", f"y{suffix}"))
    return refs


def grid_axes(
    layout: dict[str, Any], titles: list[str], *, columns: int, x_title: str | None
) -> list[tuple[str, str]]:
    """Lay ``titles`` out as independent subplots in a grid of ``columns``, row by row."""
    n = max(1, len(titles))
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    width = (1.0 - SUBPLOT_GAP * (cols - 1)) / cols
    height = (1.0 - 2 * SUBPLOT_GAP * (rows - 1)) / rows
    refs: list[tuple[str, str]] = []
    annotations = layout.setdefault("annotations", [])
    for k, title in enumerate(titles):
        row, col = divmod(k, cols)
        suffix = "" if k == 0 else str(k + 1)
        left = col * (width + SUBPLOT_GAP)
        top = 1.0 - row * (height + 2 * SUBPLOT_GAP)
        layout[f"xaxis{suffix}"] = axis(x_title, domain=[left, left + width], anchor=f"y{suffix}")
        layout[f"yaxis{suffix}"] = axis(
            None, domain=[max(0.0, top - height), top], anchor=f"x{suffix}"
        )
        annotations.append(
            {
                "text": f"<b>{title}</b>",
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": left,
                "y": top,
                "xanchor": "left",
                "yanchor": "bottom",
            }
        )
        refs.append((f"x{suffix}", f"y{suffix}"))
    return refs


def empty_figure(message: str, *, title: str | None = None, uirevision: str = "empty") -> Figure:
    """A figure that says why there is nothing to draw (no axes, one centred note)."""
    layout = base_layout(title, uirevision=uirevision)
    layout["xaxis"] = {"visible": False}
    layout["yaxis"] = {"visible": False}
    layout["annotations"] = [
        {
            "text": message,
            "showarrow": False,
            "xref": "paper",
            "yref": "paper",
            "x": 0.5,
            "y": 0.5,
            "font": {"size": 14, "color": "#666"},
        }
    ]
    return {"data": [], "layout": layout}
