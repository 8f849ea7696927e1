"""Figures of a trajectory recording: the live strip chart of signals and an action's signal window.

Inputs are what :mod:`atomlab.trajectory` returns (``SignalWindow``, ``ActionEvent``, sample
dicts) or their JSON forms; every figure stacks one panel per signal on a shared time axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from atomlab.views.figure import Figure, base_layout, color, fields_of, numbers, stacked_axes

STRIP_UIREVISION = "strip"
WINDOW_UIREVISION = "window"
TIME_AXIS = "time since the run started (s)"
ACTION_FILL = "rgba(255, 127, 14, 0.18)"
ACTION_LINE = "#ff7f0e"
PANEL_HEIGHT_PX = 170
MIN_HEIGHT_PX = 280


def strip_chart_figure(
    labels: Sequence[str],
    units: Mapping[str, str] | None = None,
    samples: Mapping[str, Any] | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """One panel per signal on a shared time axis, ready for live appends.

    ``samples`` is columnar: ``{"dt_s": [...], "values": {label: [...]}}`` (what
    ``SignalWindow.to_dict()`` and the dashboard's sample stream give). Trace ``k`` is signal
    ``labels[k]``, so a live view appends to trace ``k`` with ``Plotly.extendTraces``.
    """
    units = units or {}
    dt = list((samples or {}).get("dt_s") or [])
    values = (samples or {}).get("values") or {}
    layout = base_layout(
        title,
        uirevision=STRIP_UIREVISION,
        height=max(MIN_HEIGHT_PX, PANEL_HEIGHT_PX * len(labels)),
    )
    layout["showlegend"] = False
    refs = stacked_axes(
        layout, list(labels), units=[units.get(name, "") for name in labels], x_title=TIME_AXIS
    )
    traces = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": name,
            "x": dt,
            "y": numbers(values.get(name, [])),
            "xaxis": xref,
            "yaxis": yref,
            "line": {"color": color(k), "width": 1.5},
            "hovertemplate": f"{name}: %{{y:.4g}}<br>t = %{{x:.3f}} s<extra></extra>",
        }
        for k, (name, (xref, yref)) in enumerate(zip(labels, refs, strict=True))
    ]
    return {"data": traces, "layout": layout}


def signal_window_figure(window: Any, action: Any = None, *, title: str | None = None) -> Figure:
    """The signals around an action: one panel per signal, the action's span shaded.

    ``window`` is a ``SignalWindow`` (or its ``to_dict()``); ``action`` an ``ActionEvent`` (or
    dict) whose ``dt_s``..``end_dt_s`` is shaded and named in the title. An incomplete window
    says why in the title, so a partial plot is never taken for the whole story.
    """
    win = fields_of(window)
    labels = list(win.get("labels") or [])
    act = fields_of(action) if action is not None else None
    if title is None:
        title = _window_title(act)
    if not win.get("complete", True) and win.get("partial_reason"):
        title += f" — partial: {win['partial_reason']}"
    figure = strip_chart_figure(
        labels, win.get("units") or {}, {"dt_s": win.get("dt_s"), "values": win.get("values")}
    )
    layout = figure["layout"]
    layout["uirevision"] = WINDOW_UIREVISION
    layout["title"] = {"text": title, "x": 0.01, "xanchor": "left"}
    if act is not None:
        start = float(act.get("dt_s", 0.0))
        end = float(act.get("end_dt_s") or start)
        layout["shapes"] = [_span(start, end, f"{yref} domain") for _, yref in trace_refs(figure)]
    return figure


def trace_refs(figure: Figure) -> list[tuple[str, str]]:
    """The ``(xaxis, yaxis)`` of each trace of ``figure``, in trace order."""
    return [(t.get("xaxis", "x"), t.get("yaxis", "y")) for t in figure["data"]]


def _span(start: float, end: float, yref: str) -> dict[str, Any]:
    """A shaded band from ``start`` to ``end`` (a line when they are equal) over one panel."""
    if end <= start:
        return {
            "type": "line",
            "xref": "x",
            "yref": yref,
            "x0": start,
            "x1": start,
            "y0": 0,
            "y1": 1,
            "line": {"color": ACTION_LINE, "width": 2, "dash": "dot"},
        }
    return {
        "type": "rect",
        "xref": "x",
        "yref": yref,
        "x0": start,
        "x1": end,
        "y0": 0,
        "y1": 1,
        "fillcolor": ACTION_FILL,
        "line": {"width": 0},
    }


def _window_title(action: Mapping[str, Any] | None) -> str:
    """A spec change says its old and new value; a command action (whose values are None) what
    was sent: its command and arguments."""
    if action is None:
        return "Signal window"
    if action.get("kind") == "command":
        args = ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in (action.get("args") or {}).items()
        )
        what = f"{action.get('command')}({args}) sent"
    else:
        what = f"{action.get('spec_label')} {action.get('old_value')} → {action.get('new_value')}"
    return (
        f"Action {action.get('action_idx')}: {what} "
        f"at {float(action.get('dt_s', 0.0)):.2f} s ({action.get('source', '?')})"
    )
