"""Stage 5: one self-contained HTML page of everything the demo did (figures from
:mod:`atomlab.views`, the same code the dashboard draws with; plotly.js inlined).

:func:`build_report` takes plain data (what the stages returned) and writes the page; it imports
the views lazily, so a missing ``dashboard`` extra (plotly) skips the stage with the reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atomlab.lab.detection import Detection, ScanImage
from atomlab.lab.training import StageSkipped

REPORT_NAME = "report.html"
MAX_WINDOWS = 4
SCAN_HEIGHT_PX = 620
MIN_CURVE_POINTS = 3
MAX_CURVES = 8
CURVE_ORDER = ("loss", "accuracy", "return", "reward", "score")
"""Action windows shown in the report (the first of each spec the expert changed)."""
SECTION_TITLES = (
    "Summary",
    "Scan before repair",
    "Scan after repair",
    "Detection against the seeded surface",
    "Expert session: action windows",
    "Training curves",
    "Policy comparison",
    "Telemetry",
    "Swarm repair: paths and outcomes",
    "Defect triage",
    "Run it again, stage by stage",
)
"""Every report has these sections, in this order (a stage that did not run says why in its
section)."""


@dataclass
class ReportInputs:
    """What the stages produced; every field may be missing when its stage did not run."""

    title: str
    summary_rows: list[dict[str, Any]] = field(default_factory=list)
    summary_text: str = ""
    surface_nm: float = 20.0
    before: ScanImage | None = None
    after: ScanImage | None = None
    detections: list[Detection] = field(default_factory=list)
    after_detections: list[Detection] = field(default_factory=list)
    truth: list[dict[str, Any]] = field(default_factory=list)
    """The seeded defects (``id``, ``x_nm``, ``y_nm``, ``kind``), drawn only for comparison."""
    match: dict[str, Any] | None = None
    verification_rows: list[dict[str, Any]] = field(default_factory=list)
    windows: list[tuple[Any, Any]] = field(default_factory=list)
    """(SignalWindow, ActionEvent) pairs from the trajectory store."""
    expert_note: str = ""
    curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    comparison: list[dict[str, Any]] = field(default_factory=list)
    learning_note: str = ""
    telemetry: list[dict[str, Any]] = field(default_factory=list)
    telemetry_note: str = ""
    swarm_defects: list[dict[str, Any]] = field(default_factory=list)
    swarm_agents: list[dict[str, Any]] = field(default_factory=list)
    swarm_paths: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    swarm_note: str = ""
    triage_rows: list[dict[str, Any]] = field(default_factory=list)
    triage_note: str = ""
    commands: list[dict[str, str]] = field(default_factory=list)


def views() -> tuple[Any, Any]:
    """``(atomlab.views, atomlab.views.page)``; :class:`StageSkipped` when they are missing."""
    try:
        figures = importlib.import_module("atomlab.views")
        page = importlib.import_module("atomlab.views.page")
    except ImportError as exc:
        raise StageSkipped(f"the report's figures cannot be imported ({exc})") from None
    needed = (
        "scan_heatmap",
        "signal_window_figure",
        "metric_curves",
        "telemetry_figure",
        "policy_comparison_figure",
        "swarm_map_figure",
    )
    missing = [name for name in needed if not hasattr(figures, name)]
    if missing or not hasattr(page, "standalone_html"):
        raise StageSkipped(
            "atomlab.views lacks " + ", ".join(missing or ["standalone_html"]) + " in this "
            "version of atomlab (the shared figures have not landed yet)"
        )
    return figures, page


def build_report(inputs: ReportInputs, path: Path) -> Path:
    """Write the report to ``path`` (atomically) and return it."""
    figures, page = views()
    sections = [
        {"title": "Summary", "text": inputs.summary_text, "table": inputs.summary_rows},
        _scan_section(figures, "Scan before repair", inputs.before, inputs, before=True),
        _scan_section(figures, "Scan after repair", inputs.after, inputs, before=False),
        _detection_section(inputs),
        *_window_sections(figures, inputs),
        _curves_section(figures, inputs),
        _policy_section(figures, inputs),
        _telemetry_section(figures, inputs),
        _swarm_section(figures, inputs),
        {
            "title": "Defect triage",
            "text": inputs.triage_note,
            "table": inputs.triage_rows or None,
        },
        {
            "title": "Run it again, stage by stage",
            "text": "Each stage of the demo is one atomlab command on its own:",
            "table": inputs.commands,
        },
    ]
    text = page.standalone_html(inputs.title, sections)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _scan_section(
    figures: Any, title: str, image: ScanImage | None, inputs: ReportInputs, *, before: bool
) -> dict[str, Any]:
    if image is None:
        return {"title": title, "text": "No scan: the survey stage did not get this far."}
    frame_w, frame_h = image.frame_size_nm
    centre = (
        image.frame_center_nm[0] + image.origin_nm[0],
        image.frame_center_nm[1] + image.origin_nm[1],
    )
    figure = figures.scan_heatmap(
        image.combined() * 1e9,
        width_nm=frame_w,
        height_nm=frame_h,
        title=f"{title} (Z, trace and retrace averaged; surface coordinates)",
        unit="nm",
        center_nm=centre,
    )
    side = inputs.surface_nm
    layout = figure["layout"]
    layout["height"] = SCAN_HEIGHT_PX
    layout["xaxis"]["range"] = [centre[0] - frame_w / 2, centre[0] + frame_w / 2]
    layout["yaxis"]["range"] = [centre[1] - frame_h / 2, centre[1] + frame_h / 2]
    layout["legend"] = {"orientation": "h", "x": 0, "y": -0.12}
    layout["shapes"] = [
        {
            "type": "rect",
            "x0": 0,
            "y0": 0,
            "x1": side,
            "y1": side,
            "line": {"color": "white", "width": 1, "dash": "dash"},
        }
    ]
    if before:
        figure["data"].append(_markers(inputs.detections, "detected", "circle-open", "#ff2a6d"))
        truth = [
            Detection(
                id=str(t["id"]),
                x_nm=float(t["x_nm"]),
                y_nm=float(t["y_nm"]),
                kind=str(t.get("kind", "")),
                severity=int(t.get("severity", 1)),
                height_pm=0.0,
                sigma_nm=0.0,
                area_nm2=0.0,
            )
            for t in inputs.truth
        ]
        figure["data"].append(_markers(truth, "seeded (ground truth)", "x-thin-open", "#ffffff"))
        text = (
            f"{len(inputs.detections)} defects detected in the image (circles); the seeded "
            "defects (crosses) are drawn only to compare. The dashed square is the surface; "
            "the frame reaches beyond it so defects at its edges are seen whole."
        )
    else:
        figure["data"].append(
            _markers(inputs.after_detections, "still detected", "circle-open", "#ff2a6d")
        )
        text = (
            f"The same frame after the swarm's repairs: {len(inputs.after_detections)} "
            "defects still detected (circles)."
        )
    return {"title": title, "text": text, "figure": figure}


def _markers(detections: Sequence[Detection], name: str, symbol: str, color: str) -> dict[str, Any]:
    return {
        "type": "scatter",
        "mode": "markers",
        "name": name,
        "x": [round(d.x_nm, 3) for d in detections],
        "y": [round(d.y_nm, 3) for d in detections],
        "text": [f"{d.id} {d.kind}" for d in detections],
        "marker": {"symbol": symbol, "size": 14, "color": color, "line": {"width": 2}},
        "hovertemplate": "%{text}<br>(%{x:.2f}, %{y:.2f}) nm<extra></extra>",
    }


def _detection_section(inputs: ReportInputs) -> dict[str, Any]:
    match = inputs.match
    if match is None:
        return {
            "title": "Detection against the seeded surface",
            "text": "Not scored: the survey stage did not get this far.",
        }
    text = (
        f"Precision {match['precision']:.2f}, recall {match['recall']:.2f} at a matching "
        f"tolerance of {match['tolerance_nm']} nm (one to one, Hungarian): "
        f"{match['true_positives']} of {match['detected']} detections match one of the "
        f"{match['true_defects']} seeded defects; mean position error "
        f"{match['mean_error_nm']} nm, largest {match['max_error_nm']} nm; kind right for "
        f"{_pct(match.get('kind_accuracy'))}. The detector saw only the scan images."
    )
    rows = [
        {
            "detection": p["detected"],
            "seeded defect": p["truth"],
            "error (nm)": p["distance_nm"],
            "kind detected": p["kind_detected"],
            "kind seeded": p["kind_true"],
            "severity est.": p["severity_detected"],
            "severity seeded": p["severity_true"],
        }
        for p in match.get("pairs", [])
    ]
    rows += [
        {"detection": d, "seeded defect": "(none: false positive)"}
        for d in match["false_positives"]
    ]
    rows += [{"detection": "(missed)", "seeded defect": t} for t in match["missed"]]
    return {"title": "Detection against the seeded surface", "text": text, "table": rows}


def _pct(value: Any) -> str:
    return f"{100 * float(value):.0f} %" if isinstance(value, int | float) else "n/a"


def _window_sections(figures: Any, inputs: ReportInputs) -> list[dict[str, Any]]:
    title = "Expert session: action windows"
    if not inputs.windows:
        return [{"title": title, "text": inputs.expert_note or "No actions were recorded."}]
    out: list[dict[str, Any]] = []
    for k, (window, action) in enumerate(inputs.windows[:MAX_WINDOWS]):
        out.append(
            {
                "title": title if k == 0 else f"{title} ({k + 1})",
                "text": inputs.expert_note if k == 0 else "",
                "figure": figures.signal_window_figure(window, action),
            }
        )
    return out


def _curves_section(figures: Any, inputs: ReportInputs) -> dict[str, Any]:
    title = "Training curves"
    if not inputs.curves:
        return {"title": title, "text": inputs.learning_note or "No metrics were logged."}
    shown = curve_names(inputs.curves)
    if not shown:
        return {"title": title, "text": "No metric was logged at more than two steps."}
    left = len(inputs.curves) - len(shown)
    text = inputs.learning_note + (
        f" The {left} metrics logged once or twice (final scores) are in the run's metrics.jsonl."
        if left
        else ""
    )
    return {
        "title": title,
        "text": text.strip(),
        "figure": figures.metric_curves({"learning": inputs.curves}, metrics=shown),
    }


def curve_names(curves: Mapping[str, Sequence[Any]]) -> list[str]:
    """The metrics worth a curve: logged at three steps or more, losses and accuracies first,
    at most :data:`MAX_CURVES`."""
    names = [name for name, points in curves.items() if len(points) >= MIN_CURVE_POINTS]

    def rank(name: str) -> tuple[int, str]:
        first = next((k for k, word in enumerate(CURVE_ORDER) if word in name), len(CURVE_ORDER))
        return first, name

    return sorted(names, key=rank)[:MAX_CURVES]


def _policy_section(figures: Any, inputs: ReportInputs) -> dict[str, Any]:
    title = "Policy comparison"
    if not inputs.comparison:
        return {"title": title, "text": inputs.learning_note or "No policies were compared."}
    return {
        "title": title,
        "text": "Closed-loop evaluation on held-out seeds.",
        "table": inputs.comparison,
        "figure": figures.policy_comparison_figure(inputs.comparison),
    }


def _telemetry_section(figures: Any, inputs: ReportInputs) -> dict[str, Any]:
    title = "Telemetry"
    if not inputs.telemetry:
        return {"title": title, "text": inputs.telemetry_note or "No telemetry was sampled."}
    return {
        "title": title,
        "text": inputs.telemetry_note,
        "figure": figures.telemetry_figure(inputs.telemetry),
    }


def _swarm_section(figures: Any, inputs: ReportInputs) -> dict[str, Any]:
    title = "Swarm repair: paths and outcomes"
    if not inputs.swarm_defects:
        return {"title": title, "text": inputs.swarm_note or "The swarm stage did not run."}
    side = inputs.surface_nm
    figure = figures.swarm_map_figure(
        inputs.swarm_defects,
        inputs.swarm_agents,
        inputs.swarm_paths,
        bounds_nm=((0.0, side), (0.0, side)),
        title="Defects by final status, agents where they ended, the routes the service sent",
    )
    return {
        "title": title,
        "text": inputs.swarm_note,
        "table": inputs.verification_rows,
        "figure": figure,
    }


def commands_table(
    rows: Mapping[str, str],
) -> list[dict[str, str]]:
    """``{stage: command}`` as table rows."""
    return [{"stage": stage, "the command that does it alone": cmd} for stage, cmd in rows.items()]
