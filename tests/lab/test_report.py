"""Stage 5: one self-contained HTML page with every section, from the shared figures (C4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atomlab.lab import SECTION_TITLES, Detection, ScanImage
from atomlab.lab.report import ReportInputs, build_report, commands_table
from tests.lab.report_check import parse_report, section_titles

pytest.importorskip("atomlab.views.page", reason="the shared figures (C4) are not in this tree")


def image() -> ScanImage:
    rng = np.random.default_rng(0)
    z = rng.normal(1e-9, 1e-11, (32, 32))
    return ScanImage(z, z.copy(), (0.0, 0.0), (12.0, 12.0), origin_nm=(5.0, 5.0))


def test_every_section_is_there_even_when_stages_did_not_run(tmp_path: Path) -> None:
    inputs = ReportInputs(
        title="demo <seed 0>",
        summary_rows=[{"stage": "1. expert", "status": "ok"}],
        summary_text="A <b>surface</b>",
        before=image(),
        after=image(),
        detections=[Detection("det-01", 2.0, 3.0, "adatom", 5, 100.0, 0.3, 0.5)],
        truth=[{"id": "d1", "x_nm": 2.05, "y_nm": 3.0, "kind": "adatom"}],
        match={
            "precision": 1.0,
            "recall": 1.0,
            "tolerance_nm": 0.5,
            "true_positives": 1,
            "detected": 1,
            "true_defects": 1,
            "mean_error_nm": 0.05,
            "max_error_nm": 0.05,
            "kind_accuracy": 1.0,
            "pairs": [],
            "false_positives": [],
            "missed": [],
        },
        learning_note="Skipped: no learning pipeline.",
        swarm_note="The swarm did not run.",
        triage_note="Triage did not run.",
        commands=commands_table({"1 expert": "atomlab sim spm"}),
    )
    path = build_report(inputs, tmp_path / "out" / "report.html")
    text = path.read_text(encoding="utf-8")
    parsed = parse_report(text)
    assert parsed.doctype.lower() == "doctype html"
    assert parsed.unclosed == []
    assert section_titles(parsed) == list(SECTION_TITLES)
    assert parsed.external == []  # plotly.js is inlined: the page opens offline
    assert len(parsed.figures) == 2  # the two scans; the rest says why it is empty
    before = parsed.figures[0]
    assert [t["type"] for t in before["data"]] == ["heatmap", "scatter", "scatter"]
    assert "Skipped: no learning pipeline." in text
    assert "<b>surface</b>" not in text  # data is escaped, never markup
    assert not list(path.parent.glob(".*.tmp"))


def test_curves_are_the_metrics_logged_at_several_steps_losses_first() -> None:
    from atomlab.lab.report import MAX_CURVES, curve_names

    point = {"step": 0, "value": 1.0}
    curves = {
        "compare/bc/score": [point],
        "bc/accuracy": [point] * 40,
        "collect/actions": [point] * 6,
        "bc/loss": [point] * 40,
        "finetune/loss": [point] * 2,
    }
    assert curve_names(curves) == ["bc/loss", "bc/accuracy", "collect/actions"]
    many = {f"m{k:02d}/loss": [point] * 5 for k in range(12)}
    assert len(curve_names(many)) == MAX_CURVES
