"""Figures shared by the dashboard and the demo report: plotly figure dicts from store data.

Every function is pure (no I/O) and returns ``{"data": [...], "layout": {...}}``, JSON-ready,
built without importing plotly::

    from atomlab.views import scan_heatmap, signal_window_figure
    from atomlab.views.page import Section, standalone_html

    html = standalone_html("Session", [Section("Scan", figure=scan_heatmap(img, width_nm=20,
                                                                          height_nm=20))])

Live views keep the user's zoom across updates through each figure's ``layout.uirevision``.
"""

from atomlab.views.engine import engine_progress_figure
from atomlab.views.figure import COLORWAY, Figure, empty_figure, number, numbers
from atomlab.views.runs import (
    metric_curves,
    point_pairs,
    policy_comparison_figure,
    telemetry_figure,
    telemetry_value,
)
from atomlab.views.scan import scan_heatmap
from atomlab.views.swarm import position_nm, swarm_map_figure
from atomlab.views.trajectory import signal_window_figure, strip_chart_figure

__all__ = [
    "COLORWAY",
    "Figure",
    "empty_figure",
    "engine_progress_figure",
    "metric_curves",
    "number",
    "numbers",
    "point_pairs",
    "policy_comparison_figure",
    "position_nm",
    "scan_heatmap",
    "signal_window_figure",
    "strip_chart_figure",
    "swarm_map_figure",
    "telemetry_figure",
    "telemetry_value",
]
