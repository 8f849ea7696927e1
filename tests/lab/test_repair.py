"""The swarm stage's own logic: readings on the service's grid, routes, the simulator's record."""

from __future__ import annotations

import json
from pathlib import Path

from atomlab.lab import Detection
from atomlab.lab.repair import RepairOutcome, read_repair_log, routes, sensor_coordinates
from atomlab.surface import nm_to_units


def detection(ident: str, x: float, y: float) -> Detection:
    return Detection(ident, x, y, "adatom", 4, 120.0, 0.3, 0.5)


def test_readings_are_on_the_01_nm_grid_and_inside_the_periodic_surface() -> None:
    readings = sensor_coordinates(
        [detection("a", 3.4567, 19.96), detection("b", 19.98, 0.04)], surface_nm=20.0
    )
    assert [(r["x"], r["y"]) for r in readings] == [(3.5, 0.0), (0.0, 0.0)]
    for reading in readings:
        nm_to_units(reading["x"])  # the service's own grid rule accepts them
        assert reading["defect_type"] == "adatom" and reading["severity"] == 4


def test_routes_start_where_each_agent_was_seen_and_follow_its_commands_in_order() -> None:
    commands = [
        {"agent_id": "a1", "target": {"x": 5.0, "y": 5.0}, "created_at": "2026-01-01T00:00:02Z"},
        {"agent_id": "a1", "target": {"x": 1.0, "y": 2.0}, "created_at": "2026-01-01T00:00:01Z"},
        {"agent_id": "a1", "target": {"x": 5.0, "y": 5.0}, "created_at": "2026-01-01T00:00:03Z"},
        {"agent_id": "a2", "target": {"x": 9.0, "y": 9.0}, "created_at": "2026-01-01T00:00:01Z"},
    ]
    out = routes({"a1": [(0.0, 0.0), (0.5, 0.5)], "a3": [(7.0, 7.0)]}, commands)
    assert out == {
        "a1": [(0.0, 0.0), (1.0, 2.0), (5.0, 5.0)],
        "a2": [(9.0, 9.0)],
        "a3": [(7.0, 7.0)],
    }


def test_the_simulators_record_says_which_seeded_defects_were_repaired(tmp_path: Path) -> None:
    log = tmp_path / "gt.jsonl"
    lines = [
        {"kind": "meta", "seed": 1},
        {"kind": "repair", "defect_id": 3, "success": False},
        {"kind": "repair", "defect_id": 3, "success": True},
        {"kind": "repair", "defect_id": 5, "success": False},
    ]
    log.write_text("\n".join(json.dumps(x) for x in lines) + '\n{"kind": "rep', encoding="utf-8")
    assert read_repair_log(log) == {3: True, 5: False}
    assert read_repair_log(tmp_path / "missing.jsonl") == {}


def test_an_outcome_answers_by_detection_id() -> None:
    outcome = RepairOutcome(
        ingested={"det-01": "7", "det-02": "8"},
        defects=[{"defect_id": "7", "status": "completed"}, {"defect_id": "8", "status": "failed"}],
    )
    assert outcome.status_of("det-01") == "completed"
    assert outcome.status_of("det-03") is None
    assert outcome.counts() == {"completed": 1, "failed": 1}
