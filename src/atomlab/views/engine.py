"""The LLM engine's runs at a glance: items done out of the total, split by outcome."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from atomlab.views.figure import Figure, axis, base_layout, empty_figure

ENGINE_UIREVISION = "engine"
OK_COLOR = "#2ca02c"
REJECTED_COLOR = "#d62728"
LEFT_COLOR = "#d9d9d9"
BAR_HEIGHT_PX = 34


def engine_progress_figure(
    runs: Sequence[Mapping[str, Any]], *, title: str | None = None
) -> Figure:
    """One horizontal bar per run: items ok, rejected and still to do.

    Each run is a mapping with ``name`` (the label), ``ok``, ``rejected`` and ``items_total``
    (None when unknown: the bar then shows what finished only).
    """
    if not runs:
        return empty_figure("no engine runs found", title=title, uirevision=ENGINE_UIREVISION)
    names = [str(r.get("name", "?")) for r in runs]
    ok = [int(r.get("ok") or 0) for r in runs]
    rejected = [int(r.get("rejected") or 0) for r in runs]
    left = [
        max(0, int(r["items_total"]) - o - j) if r.get("items_total") is not None else 0
        for r, o, j in zip(runs, ok, rejected, strict=True)
    ]
    layout = base_layout(
        title, uirevision=ENGINE_UIREVISION, height=120 + BAR_HEIGHT_PX * len(runs)
    )
    layout["barmode"] = "stack"
    layout["xaxis"] = axis("items")
    layout["yaxis"] = axis(None, autorange="reversed", automargin=True)
    layout["legend"] = {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0}

    def bar(name: str, values: list[int], colour: str) -> dict[str, Any]:
        return {
            "type": "bar",
            "orientation": "h",
            "name": name,
            "y": names,
            "x": values,
            "marker": {"color": colour},
            "hovertemplate": f"%{{y}}: %{{x}} {name}<extra></extra>",
        }

    return {
        "data": [
            bar("ok", ok, OK_COLOR),
            bar("rejected", rejected, REJECTED_COLOR),
            bar("to do", left, LEFT_COLOR),
        ],
        "layout": layout,
    }
