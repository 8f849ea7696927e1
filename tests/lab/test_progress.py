"""Live progress: one stderr line per event, prefixed with the stage; the learning run's own
tracker shown through it."""

from __future__ import annotations

import io

from atomlab.lab.progress import LearningProgressView, StderrProgress
from atomlab.tracking import EtaEstimate, ProgressState


def state(step: str, elapsed: float) -> ProgressState:
    return ProgressState(
        run_id="r1",
        pipeline="imitation",
        position=2,
        total=5,
        step=step,
        step_elapsed_s=elapsed,
        run_elapsed_s=elapsed,
        eta=EtaEstimate(remaining_s=None, low_s=None, high_s=None, basis="none"),
        fraction=None,
    )


def test_lines_name_the_stage_and_say_what_happened() -> None:
    stream = io.StringIO()
    progress = StderrProgress(stream)
    progress.stage(3, 5, "survey", "scan and repair")
    progress.note("7 of 12 repaired")
    progress.done("12 detected")
    progress.stage(4, 5, "triage", "triage")
    progress.skipped("no detections")
    lines = stream.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "3/5 survey: scan and repair",
        "3/5 survey: 7 of 12 repaired",
        "3/5 survey: done - 12 detected",
        "4/5 triage: triage",
        "4/5 triage: skipped - no detections",
    ]
    assert all(line.startswith("[") and " s] " in line for line in lines)


def test_the_learning_runs_step_line_is_shown_when_the_step_changes_not_at_every_update() -> None:
    stream = io.StringIO()
    view = LearningProgressView(StderrProgress(stream), every_s=3600)
    view.event("step bc started")
    for elapsed in (1.0, 2.0, 3.0):
        view.update(state("bc", elapsed))
    view.update(state("finetune", 4.0))
    view.close()
    lines = [line.split("] ", 1)[1] for line in stream.getvalue().splitlines()]
    assert lines[0] == "step bc started"
    assert len(lines) == 3
    assert lines[1].startswith("Step 2/5: bc") and lines[2].startswith("Step 2/5: finetune")
