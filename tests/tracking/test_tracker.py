"""RunTracker life cycle: steps, statuses, files and progress output (in-process)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.errors import InvalidInputError
from atomlab.core.settings import TrackingSettings
from atomlab.tracking import (
    PlainProgress,
    RunIndex,
    RunStatus,
    RunTracker,
    StepFailedError,
    StepSpec,
    StepStatus,
    iter_jsonl,
    read_run,
    report,
)


def make(home: Path, clock: FakeClock, settings: TrackingSettings, **kw: object) -> RunTracker:
    steps = kw.pop("steps", [StepSpec(name="collect", expected_s=10), "train", "evaluate"])
    return RunTracker(
        "demo",
        steps,  # type: ignore[arg-type]
        home=home,
        clock=clock,
        settings=settings,
        monitor=False,
        handle_signals=False,
        **kw,  # type: ignore[arg-type]
    )


def test_completed_run_records_every_step_and_files(home, clock, settings):
    with make(home, clock, settings) as run:
        with run.step("collect", units=4):
            for _ in range(4):
                clock.advance(2.5)
                run.advance()
        with run.step("train"):
            clock.advance(5)
        run.skip_step("evaluate", "no simulator")
    record = read_run(run.run_dir)
    assert record.status is RunStatus.COMPLETED
    assert [s.status for s in record.steps] == [
        StepStatus.COMPLETED,
        StepStatus.COMPLETED,
        StepStatus.SKIPPED,
    ]
    assert record.steps[0].duration_s == pytest.approx(10.0)
    assert record.steps[0].units_done == 4
    assert record.steps_total == 2  # the skipped step leaves N
    assert record.duration_s == pytest.approx(15.0)
    events = [e["event"] for e in iter_jsonl(run.run_dir / "events.jsonl")]
    assert events[0] == "run.started" and events[-1] == "run.completed"
    assert "step.skipped" in events
    assert (run.run_dir / "run.lock").exists()


def test_exception_in_a_step_fails_step_and_run(home, clock, settings):
    with (
        pytest.raises(ValueError, match="bad data"),
        make(home, clock, settings) as run,
        run.step("collect"),
    ):
        raise ValueError("bad data")
    record = read_run(run.run_dir)
    assert record.status is RunStatus.FAILED
    assert record.steps[0].status is StepStatus.FAILED
    assert "bad data" in (record.steps[0].reason or "")
    assert [s.status for s in record.steps[1:]] == [StepStatus.SKIPPED, StepStatus.SKIPPED]


def test_subprocess_step_runs_in_own_group_and_logs_output(home, clock, settings):
    code = "import os; print('pgid', os.getpgid(0) == os.getpid(), os.environ['ATOMLAB_STEP'])"
    with make(home, clock, settings, steps=["child"]) as run:
        run.run_step("child", [sys.executable, "-c", code])
    step = read_run(run.run_dir).steps[0]
    assert step.status is StepStatus.COMPLETED and step.exit_code == 0
    assert Path(step.log_path or "").read_text().strip() == "pgid True child"


def test_failing_subprocess_raises_with_log_and_marks_run_failed(home, clock, settings):
    code = "import sys; print('boom'); sys.exit(3)"
    with (
        pytest.raises(StepFailedError) as info,
        make(home, clock, settings, steps=["a", "b"]) as run,
    ):
        run.run_step("a", [sys.executable, "-c", code])
    assert info.value.details["exit_code"] == 3
    assert "boom" in info.value.details["log_tail"]
    record = read_run(run.run_dir)
    assert record.status is RunStatus.FAILED
    assert record.steps[0].status is StepStatus.FAILED
    assert record.steps[0].reason == "exit status 3"


def test_missing_command_is_a_clear_error(home, clock, settings):
    with (
        pytest.raises(StepFailedError, match="could not start"),
        make(home, clock, settings, steps=["a"]) as run,
    ):
        run.run_step("a", ["definitely-not-a-command-xyz"])


def test_step_progress_file_from_child_feeds_in_step_progress(home, clock, settings):
    code = "from atomlab.tracking import report_progress; report_progress(3, 4)"
    with make(home, clock, settings, steps=["a", "b"]) as run:
        run.run_step("a", [sys.executable, "-c", code])
        progress = run.run_dir / "progress" / "a.json"
        assert json.loads(progress.read_text()) == {"done": 3, "total": 4}


def test_misuse_is_refused_with_names(home, clock, settings):
    with make(home, clock, settings) as run:
        with pytest.raises(InvalidInputError, match="no step 'nope'"):
            run.start_step("nope")
        with run.step("collect"):
            pass
        with pytest.raises(InvalidInputError, match="already completed"):
            run.start_step("collect")
        with pytest.raises(InvalidInputError, match="only pending"):
            run.skip_step("collect")
    with pytest.raises(InvalidInputError, match="declared twice"):
        RunTracker("x", ["a", "a"], home=home)
    with pytest.raises(ValueError, match="step name"):
        StepSpec(name="bad name!")
    with pytest.raises(InvalidInputError, match="step name 'bad name!'"):
        RunTracker("x", ["bad name!"], home=home)


def test_plain_progress_prints_step_x_of_n_and_eta(home, clock, settings):
    stream = io.StringIO()
    view = PlainProgress(stream, interval_s=10)
    with make(home, clock, settings, progress=view) as run, run.step("collect", units=10):
        clock.advance(4)
        run.advance(done=5)
        run.tick()
        clock.advance(10)
        run.tick()
    text = stream.getvalue()
    assert "Step 1/3: collect started" in text
    assert "Step 1/3: collect (elapsed 4s, step 4s, ETA" in text
    assert "50%" in text
    assert text.count("Step 1/3: collect (elapsed") == 2  # one line per interval while running
    assert "completed after" in text


def test_tick_writes_telemetry_and_heartbeat(home, clock, settings):
    with make(home, clock, settings, steps=["a"]) as run, run.step("a"):
        run.tick()
        clock.advance(6)
        run.tick()
        beat = read_run(run.run_dir).heartbeat_at
    samples = list(iter_jsonl(run.run_dir / "telemetry.jsonl"))
    assert len(samples) >= 2
    assert samples[0]["step"] == "a" and samples[0]["proc_count"] >= 1
    assert beat == "2026-01-01T00:00:06.000000Z"


def test_runs_are_indexed_with_summary(home, clock, settings):
    with make(home, clock, settings, steps=["a"]) as run, run.step("a", units=10):
        clock.advance(5)
        run.advance(10)
    with RunIndex.open(home) as index:
        (row,) = index.list_runs()
    assert row.run_id == run.run_id and row.status == "completed"
    assert row.throughput == pytest.approx(2.0)
    assert row.steps_done == 1 and row.steps_total == 1


class BrokenMirror:
    def open(self, record):
        raise OSError("logdir is read-only")

    def close(self):
        pass


def test_a_run_that_cannot_start_its_services_is_recorded_failed(home, clock, settings):
    tracker = make(home, clock, settings, mirrors=[BrokenMirror()])
    with pytest.raises(OSError, match="read-only"):
        tracker.start()
    record = read_run(tracker.run_dir)
    assert record.status is RunStatus.FAILED
    assert record.reason == "could not start: OSError: logdir is read-only"
    with RunIndex.open(home) as index:
        assert index.list_runs()[0].status == "failed"


def test_keyboard_interrupt_in_a_step_cancels_the_run(home, clock, settings):
    with pytest.raises(KeyboardInterrupt), make(home, clock, settings) as run, run.step("collect"):
        raise KeyboardInterrupt
    record = read_run(run.run_dir)
    assert record.status is RunStatus.CANCELLED
    assert [s.status for s in record.steps] == [
        StepStatus.CANCELLED,
        StepStatus.SKIPPED,
        StepStatus.SKIPPED,
    ]


def test_defaults_come_from_the_same_settings_as_the_cli(home, monkeypatch):
    monkeypatch.setenv("ATOMLAB_TRACKING__HEARTBEAT_INTERVAL_S", "7")
    tracker = RunTracker("env", ["a"], monitor=False, handle_signals=False, telemetry=False)
    assert tracker.home == home  # ATOMLAB_HOME, set by the isolated_home fixture
    assert tracker.settings.heartbeat_interval_s == 7


def test_status_shows_the_progress_a_step_process_reported_since_the_last_heartbeat(
    home, clock, settings
):
    run = make(home, clock, settings, steps=["work"])
    with run, run.step("work"):
        clock.advance(10)
        on_disk = read_run(run.run_dir)  # as of the step's start: no progress yet
        progress = run.run_dir / "progress" / "work.json"  # what report_progress(5, 10) writes
        progress.parent.mkdir(exist_ok=True)
        progress.write_text(json.dumps({"done": 5, "total": 10}))
        view = report.live_view(on_disk, None, clock=clock)
    step = view["steps"][0]
    assert (step["units_done"], step["units_total"]) == (5, 10)
    assert view["eta"]["remaining_s"] == pytest.approx(10, rel=0.05)  # half done in 10 s
