"""Stage 2: the learning pipeline (C3) when this atomlab has it, a stated skip when not."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from atomlab.lab.training import StageSkipped, learning_pipeline, telemetry_samples


def test_a_learning_package_without_the_pipeline_skips_the_stage_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "atomlab.learning", types.ModuleType("atomlab.learning"))
    with pytest.raises(StageSkipped) as caught:
        learning_pipeline()
    assert "run_pipeline is not available" in caught.value.reason
    assert "atomlab learn run --preset demo" in caught.value.reason


def test_a_learning_package_that_cannot_be_imported_skips_the_stage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "atomlab.learning", None)  # import raises ImportError
    with pytest.raises(StageSkipped, match="cannot be imported"):
        learning_pipeline()


def test_telemetry_is_read_from_the_runs_folder_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "telemetry.jsonl").write_text(
        '{"dt_s": 0.0, "proc_cpu_pct": 5}\n{"dt_s": 1.0, "proc_cpu_pct": 7}\n{"dt_s": 2',
        encoding="utf-8",
    )
    assert [s["proc_cpu_pct"] for s in telemetry_samples(tmp_path)] == [5, 7]
    assert telemetry_samples(tmp_path / "none") == []
