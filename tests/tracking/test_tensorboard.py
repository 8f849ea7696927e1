"""The TensorBoard mirror writes real event files with tensorboard's own writer (no torch)."""

from __future__ import annotations

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.settings import TrackingSettings
from atomlab.tracking import RunTracker, TensorBoardMirror

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def scalars(logdir):
    """Scalars as TensorBoard reads them (the summary writer stores them as scalar tensors)."""
    from tensorboard.util import tensor_util

    acc = event_accumulator.EventAccumulator(str(logdir))
    acc.Reload()
    return {
        tag: [tensor_util.make_ndarray(e.tensor_proto).item() for e in acc.Tensors(tag)]
        for tag in acc.Tags()["tensors"]
    }


def test_live_mirror_writes_telemetry_and_step_progress(home, tmp_path):
    clock = FakeClock()
    logdir = tmp_path / "tb"
    with RunTracker(
        "tb",
        ["a", "b"],
        home=home,
        clock=clock,
        settings=TrackingSettings(gpu=False),
        monitor=False,
        handle_signals=False,
        mirrors=[TensorBoardMirror(logdir)],
    ) as run:
        with run.step("a"):
            run.tick()
            clock.advance(3)
        with run.step("b"):
            clock.advance(2)
    data = scalars(logdir / run.run_id)
    assert data["progress/steps_done"][-1] == 2
    assert data["steps/a/duration_s"] == [3.0]
    assert len(data["telemetry/proc_rss_mb"]) >= 1


def test_cli_replays_a_recorded_run(cli, tmp_path):
    assert cli("runs", "exec", "-p", "tb", "-s", "a=true").exit_code == 0
    result = cli("runs", "tensorboard", "latest", "--logdir", str(tmp_path / "tb"), "--json")
    assert result.exit_code == 0
    assert scalars(result.json["logdir"])["progress/steps_done"] == [1.0]
