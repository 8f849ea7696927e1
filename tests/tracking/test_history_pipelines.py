"""The index lists the pipelines it holds (a dashboard's pipeline filter offers them)."""

from __future__ import annotations

from atomlab.core.settings import TrackingSettings
from atomlab.tracking import RunIndex, RunTracker


def test_pipelines_are_listed_once_each_in_order(home, clock):
    assert RunIndex.open(home).pipelines() == []
    for pipeline in ("nightly", "imitation", "nightly"):
        with (
            RunTracker(
                pipeline,
                ["a"],
                home=home,
                clock=clock,
                settings=TrackingSettings(gpu=False),
                monitor=False,
                handle_signals=False,
                telemetry=False,
            ) as run,
            run.step("a"),
        ):
            clock.advance(1)
    with RunIndex.open(home) as index:
        assert index.pipelines() == ["imitation", "nightly"]
