"""Stage 4: the engine's ``defect-triage`` pipeline over the defects the scan found.

One scan is one item; each detection is a level (classification, then repair procedures from
the catalogue). The provider is the offline one, whatever keys the environment holds: the demo
needs no network and no key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atomlab.lab.detection import Detection

PIPELINE = "defect-triage"


@dataclass
class TriageOutcome:
    """What the engine wrote, flattened to one row per defect for the report."""

    input_path: Path
    output_path: Path
    summary: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    scan_summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": PIPELINE,
            "provider": "offline",
            "input": str(self.input_path),
            "output": str(self.output_path),
            "status": self.summary.get("status"),
            "items": self.summary.get("items"),
            "ok": self.summary.get("ok"),
            "rejected": self.summary.get("rejected"),
            "calls": self.summary.get("calls"),
            "defects_triaged": len(self.rows),
            "surface_quality": self.scan_summary.get("surface_quality"),
            "rows": self.rows,
        }


def triage_item(
    detections: Sequence[Detection], *, scan_id: str, sample: str, size_nm: float
) -> dict[str, Any]:
    """The pipeline's input item for one scan's detections."""
    return {
        "scan_id": scan_id,
        "sample": sample,
        "size_nm": size_nm,
        "defects": [
            {
                "defect_id": d.id,
                "x_nm": round(d.x_nm, 2),
                "y_nm": round(d.y_nm, 2),
                "kind_hint": _hint(d),
                "severity_estimate": d.severity,
            }
            for d in detections
        ],
    }


def _hint(d: Detection) -> str:
    shape = "depression" if d.height_pm < 0 else "protrusion"
    where = " on a step edge" if d.on_step else ""
    return (
        f"{shape}{where}, {abs(d.height_pm):.0f} pm, {2.355 * d.sigma_nm:.2f} nm wide "
        f"(image analysis: {d.kind})"
    )


def run_triage(
    detections: Sequence[Detection],
    *,
    work_dir: Path,
    scan_id: str,
    sample: str,
    size_nm: float,
) -> TriageOutcome:
    """Run the pipeline offline over one item made of ``detections``."""
    from atomlab.engine import (
        PipelineRunner,
        ResponseCache,
        RunOptions,
        load_pipeline,
        run_blocking,
    )
    from atomlab.llm import OfflineProvider

    work_dir.mkdir(parents=True, exist_ok=True)
    input_path = work_dir / "scans.jsonl"
    output_path = work_dir / "triage.jsonl"
    item = triage_item(detections, scan_id=scan_id, sample=sample, size_nm=size_nm)
    input_path.write_text(json.dumps(item) + "\n", encoding="utf-8")
    runner = PipelineRunner(
        load_pipeline(PIPELINE),
        OfflineProvider(),
        cache=ResponseCache(work_dir / "cache"),
        options=RunOptions(),
    )
    summary = run_blocking(runner, input_path, output_path, handle_signals=False)
    outcome = TriageOutcome(input_path=input_path, output_path=output_path)
    outcome.summary = summary.to_dict()
    if output_path.is_file():
        for line in output_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                outcome.scan_summary, outcome.rows = _flatten(json.loads(line), detections)
    return outcome


def _flatten(
    record: dict[str, Any], detections: Sequence[Detection]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A record's scan summary and one row per defect level (docs/engine.md, "Output")."""
    by_id = {d.id: d for d in detections}
    scan_summary = record.get("stages", {}).get("summary", {})
    rows = []
    for level in record.get("levels", []):
        stages = level.get("stages", {})
        triage = stages.get("classification", {})
        mapped = stages.get("repair", {}).get("catalogues", {}).get("repair_procedures", {})
        procedures = sorted({p for ids in mapped.values() for p in ids})
        detected = by_id.get(str(level.get("id")))
        rows.append(
            {
                "defect": level.get("id"),
                "x_nm": round(detected.x_nm, 2) if detected else None,
                "y_nm": round(detected.y_nm, 2) if detected else None,
                "detected_kind": detected.kind if detected else None,
                "category": triage.get("category"),
                "severity": triage.get("severity"),
                "procedures": ", ".join(procedures),
                "rationale": triage.get("rationale"),
            }
        )
    return scan_summary, rows
