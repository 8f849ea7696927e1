"""The TensorBoard mirror writes real scalar summaries that TensorBoard's own reader reads."""

from __future__ import annotations

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.settings import TrackingSettings
from atomlab.tracking import RunTracker, TensorBoardMirror

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` through ``EventAccumulator.Scalars()``."""
    acc = event_accumulator.EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_live_mirror_writes_scalars_with_steps_that_never_collide(home, tmp_path):
    clock = FakeClock()
    logdir = tmp_path / "tb"
    with RunTracker(
        "tb",
        ["a", "b"],
        home=home,
        clock=clock,
        settings=TrackingSettings(gpu=False, telemetry_interval_s=0.25),
        monitor=False,
        handle_signals=False,
        mirrors=[TensorBoardMirror(logdir)],
    ) as run:
        with run.step("a"):
            for _ in range(8):  # samples 0.25 s apart: round(dt_s) made 2 of every 4 collide
                run.tick()
                clock.advance(0.25)
            for epoch in range(3):
                run.log_metric("bc/loss", 1.0 / (epoch + 1))
            run.log_metric("eval/score", 0.5, step=7)
        with run.step("b"):
            clock.advance(2)
    data = scalars(logdir / run.run_id)
    rss_steps = [step for step, _ in data["telemetry/proc_rss_mb"]]
    assert rss_steps == list(range(len(rss_steps))) and len(rss_steps) >= 8
    assert data["metrics/bc/loss"] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    assert data["metrics/eval/score"] == [(7, 0.5)]
    assert data["steps/a/duration_s"] == [(0, 2.0)]
    done = [value for _, value in data["progress/steps_done"]]
    assert done[-1] == 2
    progress_steps = [step for step, _ in data["progress/steps_done"]]
    assert progress_steps == sorted(set(progress_steps))


def test_cli_replays_a_recorded_run_with_its_metrics(cli, home, tmp_path):
    with (
        RunTracker(
            "tb2",
            ["a"],
            home=home,
            settings=TrackingSettings(gpu=False),
            monitor=False,
            handle_signals=False,
        ) as run,
        run.step("a"),
    ):
        run.log_metric("loss", 2.0)
        run.log_metric("loss", 1.0)
    result = cli("runs", "tensorboard", run.run_id, "--logdir", str(tmp_path / "tb"), "--json")
    assert result.exit_code == 0
    data = scalars(result.json["logdir"])
    assert data["metrics/loss"] == [(0, 2.0), (1, 1.0)]
    assert data["progress/steps_done"] == [(0, 1.0)]
    assert [s for s, _ in data["telemetry/proc_rss_mb"]] == list(
        range(len(data["telemetry/proc_rss_mb"]))
    )
