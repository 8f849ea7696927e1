"""Figures of tracked runs: logged metrics (one run or several compared), telemetry, policies.

Inputs are what :mod:`atomlab.tracking` gives: ``read_metrics(run_dir)`` point lists (objects
with ``step`` and ``value``, dicts, or ``(step, value)`` pairs), telemetry sample dicts, and the
learning pipeline's comparison rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from atomlab.views.figure import (
    Figure,
    base_layout,
    color,
    empty_figure,
    grid_axes,
    number,
    stacked_axes,
)

METRICS_UIREVISION = "metrics"
TELEMETRY_UIREVISION = "telemetry"
POLICY_UIREVISION = "policies"
METRIC_COLUMNS = 2
METRIC_PANEL_HEIGHT_PX = 260
TELEMETRY_PANELS = (
    (
        "load (%)",
        (
            ("proc_cpu_pct", "CPU, run's processes"),
            ("sys_cpu_pct", "CPU, whole machine"),
            ("sys_mem_pct", "memory used, machine"),
        ),
    ),
    ("memory (MB)", (("proc_rss_mb", "RSS, run's processes"),)),
    ("disk (MB/s)", (("disk_read_mb_s", "read"), ("disk_write_mb_s", "written"))),
)
POLICY_PANELS = (
    ("score", "score"),
    ("good_line_fraction", "good lines (fraction)"),
    ("recovery_s", "recovery (s)"),
    ("crashes", "crashes"),
)


def point_pairs(points: Sequence[Any]) -> tuple[list[int], list[float | None]]:
    """Steps and values of metric points given as objects, dicts or ``(step, value)`` pairs."""
    steps: list[int] = []
    values: list[float | None] = []
    for p in points:
        if isinstance(p, Mapping):
            step, value = p.get("step"), p.get("value")
        elif isinstance(p, tuple | list):
            step, value = p[0], p[1]
        else:
            step, value = getattr(p, "step", None), getattr(p, "value", None)
        if step is None:
            continue
        steps.append(int(step))
        values.append(number(value))
    return steps, values


def metric_curves(
    series_by_run: Mapping[str, Mapping[str, Sequence[Any]]],
    *,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Logged metrics as curves over steps: one panel per metric, one colour per run.

    ``series_by_run`` is ``{run label: {metric name: points}}``; with several runs every panel
    overlays them, which is how runs are compared. ``metrics`` picks and orders the panels
    (default: every name, sorted). A run keeps its colour in every panel; clicking a run in the
    legend hides it everywhere. Traces carry ``meta = {"run", "metric"}`` for live appends.
    """
    names = (
        list(metrics)
        if metrics is not None
        else sorted({m for series in series_by_run.values() for m in series})
    )
    if not names:
        return empty_figure("no metrics logged yet", title=title, uirevision=METRICS_UIREVISION)
    layout = base_layout(title, uirevision=METRICS_UIREVISION)
    refs = grid_axes(layout, names, columns=METRIC_COLUMNS, x_title="step")
    rows = -(-len(names) // min(METRIC_COLUMNS, len(names)))
    layout["height"] = 80 + METRIC_PANEL_HEIGHT_PX * rows
    traces: list[dict[str, Any]] = []
    for r, (run, series) in enumerate(series_by_run.items()):
        for m, name in enumerate(names):
            steps, values = point_pairs(series.get(name, []))
            xref, yref = refs[m]
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers" if len(steps) < 30 else "lines",
                    "name": run,
                    "legendgroup": run,
                    "showlegend": m == 0,
                    "x": steps,
                    "y": values,
                    "xaxis": xref,
                    "yaxis": yref,
                    "line": {"color": color(r), "width": 1.8},
                    "marker": {"size": 4},
                    "meta": {"run": run, "metric": name},
                    "hovertemplate": f"{run}<br>{name} %{{y:.5g}} at step %{{x}}<extra></extra>",
                }
            )
    return {"data": traces, "layout": layout}


def telemetry_figure(samples: Sequence[Mapping[str, Any]], *, title: str | None = None) -> Figure:
    """A run's resource telemetry over time: CPU, memory, I/O and, when present, each GPU.

    ``samples`` are ``telemetry.jsonl`` records (``dt_s`` plus the fields of docs/tracking.md).
    """
    if not samples:
        return empty_figure("no telemetry yet", title=title, uirevision=TELEMETRY_UIREVISION)
    dt = [number(s.get("dt_s")) for s in samples]
    panels: list[tuple[str, list[tuple[str, str, list[float | None]]]]] = []
    for panel, fields in TELEMETRY_PANELS:
        series = [(key, name, [number(s.get(key)) for s in samples]) for key, name in fields]
        panels.append((panel, series))
    gpu_series = _gpu_series(samples)
    if gpu_series:
        panels.append(("GPU", gpu_series))
    layout = base_layout(title, uirevision=TELEMETRY_UIREVISION, height=160 * len(panels) + 100)
    refs = stacked_axes(layout, [p for p, _ in panels], x_title="time since the run started (s)")
    traces: list[dict[str, Any]] = []
    k = 0
    for (_panel, series), (xref, yref) in zip(panels, refs, strict=True):
        for key, name, values in series:
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": name,
                    "x": dt,
                    "y": values,
                    "xaxis": xref,
                    "yaxis": yref,
                    "line": {"color": color(k), "width": 1.5},
                    "meta": {"field": key},
                }
            )
            k += 1
    return {"data": traces, "layout": layout}


def telemetry_value(sample: Mapping[str, Any], field: str) -> float | None:
    """The value a telemetry trace (its ``meta.field``) takes from one sample: a top-level key,
    or ``gpus.<index>.<key>`` for a GPU's reading; None when the sample lacks it."""
    if field.startswith("gpus."):
        _, index, key = field.split(".", 2)
        for gpu in sample.get("gpus") or []:
            if gpu and str(gpu.get("index")) == index:
                return number(gpu.get(key))
        return None
    return number(sample.get(field))


def _gpu_series(
    samples: Sequence[Mapping[str, Any]],
) -> list[tuple[str, str, list[float | None]]]:
    """Utilisation (%) per GPU index seen in any sample; empty when no sample has a GPU."""
    indexes = sorted({int(g.get("index", 0)) for s in samples for g in (s.get("gpus") or []) if g})
    out: list[tuple[str, str, list[float | None]]] = []
    for index in indexes:
        values: list[float | None] = []
        for s in samples:
            match = [g for g in (s.get("gpus") or []) if int(g.get("index", -1)) == index]
            values.append(number(match[0].get("util_pct")) if match else None)
        out.append((f"gpus.{index}.util_pct", f"GPU {index} util (%)", values))
    return out


def policy_comparison_figure(
    rows: Sequence[Mapping[str, Any]], *, title: str | None = None
) -> Figure:
    """Policies side by side on each measure of the learning pipeline's comparison.

    ``rows`` are ``PipelineResult.comparison`` rows (``policy``, ``score``,
    ``good_line_fraction``, ``recovery_s``, ``crashes``, ``episodes``); a measure no row has is
    left out.
    """
    if not rows:
        return empty_figure("no policies compared yet", title=title, uirevision=POLICY_UIREVISION)
    panels = [(key, name) for key, name in POLICY_PANELS if any(key in r for r in rows)]
    if not panels:
        return empty_figure(
            "the rows hold none of: " + ", ".join(k for k, _ in POLICY_PANELS),
            title=title,
            uirevision=POLICY_UIREVISION,
        )
    layout = base_layout(title, uirevision=POLICY_UIREVISION, height=320)
    layout["showlegend"] = False
    refs = grid_axes(layout, [name for _, name in panels], columns=len(panels), x_title=None)
    policies = [str(r.get("policy", f"policy {k}")) for k, r in enumerate(rows)]
    traces = []
    for (key, name), (xref, yref) in zip(panels, refs, strict=True):
        values = [number(r.get(key)) for r in rows]
        traces.append(
            {
                "type": "bar",
                "name": name,
                "x": policies,
                "y": values,
                "xaxis": xref,
                "yaxis": yref,
                "marker": {"color": [color(k) for k in range(len(rows))]},
                "text": ["" if v is None else f"{v:.3g}" for v in values],
                "textposition": "auto",
                "hovertemplate": f"%{{x}}<br>{name}: %{{y:.4g}}<extra></extra>",
            }
        )
    return {"data": traces, "layout": layout}
