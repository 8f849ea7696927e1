"""The swarm's surface map: defects coloured by status, agents where they are, their paths.

Defects and agents are the swarm's own records (``Defect``, ``AgentState``: objects whose
``position`` is a ``Point`` of integers in 0.1 nm) or the service's JSON (mappings with
``{"position": {"x", "y"}}`` in nm); paths are lists of ``(x_nm, y_nm)`` per agent. Importing
:mod:`atomlab.swarm` would load its whole service stack, so records are read by their fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from atomlab.surface import units_to_nm
from atomlab.views.figure import Figure, axis, base_layout, color, fields_of

SWARM_UIREVISION = "swarm"
DEFECT_COLORS = {  # the swarm's DefectStatus values, in the order of a defect's life
    "detected": "#7f7f7f",
    "queued": "#1f77b4",
    "repairing": "#ff7f0e",
    "completed": "#2ca02c",
    "failed": "#d62728",
    "unrepairable": "#9467bd",
}
DEFECT_SYMBOLS = {"completed": "circle-open", "failed": "x", "unrepairable": "x-thin-open"}
AGENT_COLORS = {"idle": "#333333", "moving": "#17becf", "repairing": "#ff7f0e"}
AGENT_ALERT_COLOR = "#d62728"  # error, dead
ZONE_FILL = "rgba(214, 39, 40, 0.10)"
HALT_COLOR = "#d62728"


def position_nm(item: Any) -> tuple[float, float]:
    """``(x, y)`` in nm of a swarm record (its ``position`` in 0.1 nm units) or of the service's
    JSON (a mapping whose ``position`` is in nm)."""
    if isinstance(item, Mapping):
        pos = item.get("position", item)
        return float(pos["x"]), float(pos["y"])
    point = item.position
    return units_to_nm(int(point.x)), units_to_nm(int(point.y))


def _status(item: Any) -> str:
    status = getattr(item, "status", None)
    if status is None:
        status = fields_of(item).get("status", "")
    return str(getattr(status, "value", status))


def _ident(item: Any, key: str) -> str:
    value = getattr(item, key, None)
    if value is None:
        value = fields_of(item).get(key, "?")
    return str(value)


def swarm_map_figure(
    defects: Sequence[Any],
    agents: Sequence[Any],
    paths: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    *,
    bounds_nm: tuple[tuple[float, float], tuple[float, float]] | None = None,
    no_go_zones: Sequence[Mapping[str, Sequence[float]]] = (),
    halted: str | None = None,
    title: str | None = None,
) -> Figure:
    """The surface seen from above, in nm.

    One trace per defect status (a legend entry hides or shows that status), one for the
    agents (labelled with their ids, red when in error or dead), one line per agent path in the
    agent's colour; no-go zones are shaded boxes. ``halted`` (the E-stop's reason) puts a red
    banner over the map.
    """
    layout = base_layout(title, uirevision=SWARM_UIREVISION, height=620)
    x_range = list(bounds_nm[0]) if bounds_nm else None
    y_range = list(bounds_nm[1]) if bounds_nm else None
    layout["xaxis"] = axis("x (nm)", range=x_range, constrain="domain")
    layout["yaxis"] = axis("y (nm)", range=y_range, scaleanchor="x", scaleratio=1)
    layout["legend"] = {"orientation": "v", "x": 1.02, "y": 1}
    traces: list[dict[str, Any]] = []
    agent_ids = sorted(_ident(a, "agent_id") for a in agents)
    agent_color = {agent_id: color(k) for k, agent_id in enumerate(agent_ids)}
    for agent_id, points in sorted((paths or {}).items()):
        if len(points) < 2:
            continue
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": f"path {agent_id}",
                "legendgroup": "paths",
                "showlegend": False,
                "x": [p[0] for p in points],
                "y": [p[1] for p in points],
                "line": {"color": agent_color.get(agent_id, "#999"), "width": 1, "dash": "dot"},
                "hoverinfo": "skip",
                "meta": {"kind": "path", "agent_id": agent_id},
            }
        )
    by_status: dict[str, list[Any]] = {status: [] for status in DEFECT_COLORS}
    for defect in defects:
        by_status.setdefault(_status(defect), []).append(defect)
    for status, items in by_status.items():
        xy = [position_nm(d) for d in items]
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"{status} ({len(items)})",
                "x": [p[0] for p in xy],
                "y": [p[1] for p in xy],
                "text": [_ident(d, "defect_id") for d in items],
                "marker": {
                    "color": DEFECT_COLORS.get(status, "#bcbd22"),
                    "symbol": DEFECT_SYMBOLS.get(status, "circle"),
                    "size": 9,
                    "line": {"width": 1.5, "color": DEFECT_COLORS.get(status, "#bcbd22")},
                },
                "hovertemplate": f"%{{text}} ({status})<br>(%{{x:.1f}}, %{{y:.1f}}) nm"
                "<extra></extra>",
                "meta": {"kind": "defects", "status": status},
            }
        )
    agent_xy = [position_nm(a) for a in agents]
    statuses = [_status(a) for a in agents]
    traces.append(
        {
            "type": "scatter",
            "mode": "markers+text",
            "name": f"agents ({len(agents)})",
            "x": [p[0] for p in agent_xy],
            "y": [p[1] for p in agent_xy],
            "text": [_ident(a, "agent_id") for a in agents],
            "textposition": "top center",
            "customdata": statuses,
            "marker": {
                "symbol": "diamond",
                "size": 13,
                "color": [AGENT_COLORS.get(s, AGENT_ALERT_COLOR) for s in statuses],
                "line": {
                    "width": 2,
                    "color": [agent_color.get(_ident(a, "agent_id"), "#999") for a in agents],
                },
            },
            "hovertemplate": "%{text}: %{customdata}<br>(%{x:.2f}, %{y:.2f}) nm<extra></extra>",
            "meta": {"kind": "agents"},
        }
    )
    layout["shapes"] = [_zone(z) for z in no_go_zones]
    if halted:
        layout["annotations"] = [
            {
                "text": f"<b>HALTED</b>: {halted}",
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 1.0,
                "yanchor": "bottom",
                "font": {"color": "white", "size": 14},
                "bgcolor": HALT_COLOR,
            }
        ]
    return {"data": traces, "layout": layout}


def _zone(zone: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    x, y = zone["x"], zone["y"]
    return {
        "type": "rect",
        "xref": "x",
        "yref": "y",
        "x0": x[0],
        "x1": x[1],
        "y0": y[0],
        "y1": y[1],
        "fillcolor": ZONE_FILL,
        "line": {"color": HALT_COLOR, "width": 1, "dash": "dash"},
    }
