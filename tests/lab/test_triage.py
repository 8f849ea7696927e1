"""Stage 4: the engine's defect-triage pipeline, offline, over the detections of one scan."""

from __future__ import annotations

import json
from pathlib import Path

from atomlab.lab import Detection
from atomlab.lab.triage import run_triage, triage_item

DETECTIONS = [
    Detection("det-01", 3.21, 4.5, "vacancy", 6, -40.0, 0.3, 0.4),
    Detection("det-02", 9.8, 12.0, "step_edge", 8, 120.0, 0.7, 3.0, on_step=True),
    Detection("det-03", 15.0, 1.0, "contamination", 10, 600.0, 1.0, 20.0),
]


def test_one_scan_is_one_item_and_each_detection_one_level() -> None:
    item = triage_item(DETECTIONS, scan_id="s1", sample="Cu", size_nm=20.0)
    assert item["scan_id"] == "s1" and item["size_nm"] == 20.0
    assert [d["defect_id"] for d in item["defects"]] == ["det-01", "det-02", "det-03"]
    assert "depression" in item["defects"][0]["kind_hint"]
    assert "on a step edge" in item["defects"][1]["kind_hint"]


def test_the_offline_engine_triages_every_detection(tmp_path: Path) -> None:
    outcome = run_triage(
        DETECTIONS, work_dir=tmp_path / "engine", scan_id="s1", sample="Cu", size_nm=20.0
    )
    data = outcome.to_dict()
    assert data["status"] == "complete" and data["ok"] == 1 and data["rejected"] == 0
    assert [row["defect"] for row in outcome.rows] == ["det-01", "det-02", "det-03"]
    categories = {"vacancy", "adatom", "step_edge", "dislocation", "contamination", "tip_artifact"}
    catalogue = json.loads(
        (
            Path(__file__).parents[2]
            / "src/atomlab/engine/pipelines/defect-triage/catalogues/repair_procedures.json"
        ).read_text()
    )
    procedures = {entry["id"] for entry in catalogue}
    for row in outcome.rows:
        assert row["category"] in categories
        assert row["severity"] in {"low", "medium", "high", "critical"}
        assert row["procedures"] and set(row["procedures"].split(", ")) <= procedures
    assert outcome.scan_summary["surface_quality"] in {"pristine", "good", "degraded", "unusable"}
    assert outcome.output_path.is_file() and outcome.input_path.is_file()
