"""Tip health from the simulator's events, and the task score."""

from __future__ import annotations

import pytest

from atomlab.core.errors import InvalidInputError
from atomlab.learning.task import EpisodeStats, Slot, TaskConfig, TipTimeline, summarise


def test_the_timeline_follows_changes_crashes_and_restorations() -> None:
    timeline = TipTimeline(10.0)
    timeline.extend(
        [
            (12.0, "tip_change"),
            (13.0, "scan_finished"),
            (14.0, "tip_restored"),
            (20.0, "tip_crash"),
            (21.0, "tip_change"),
            (23.0, "tip_restored"),
        ]
    )
    assert timeline.status_at(11.0).healthy
    status = timeline.status_at(13.5)
    assert status.state == "damaged" and status.since_s == 12.0
    assert timeline.status_at(21.5).crashed  # a crashed tip that changes is still crashed
    assert timeline.status_at(21.5).since_s == 20.0
    assert timeline.healthy_throughout(14.0, 19.9)
    assert not timeline.healthy_throughout(11.0, 12.5)
    assert not timeline.healthy_throughout(19.0, 25.0)
    assert timeline.crashes_between(0.0, 30.0) == 1
    assert timeline.damage_periods(22.0) == [(12.0, 14.0), (20.0, 22.0)]


def test_an_event_before_the_start_counts_from_the_start() -> None:
    timeline = TipTimeline(10.0)
    timeline.add(9.0, "tip_change")
    assert not timeline.status_at(10.0).healthy


def test_only_kept_scanning_healthy_windows_are_good_and_crashes_cost() -> None:
    stats = EpisodeStats(seed=1, crash_penalty=0.1)
    stats.add_slot(Slot(0.0, 1.0, 0, good=True, crashes=0), 1.0)
    stats.add_slot(Slot(1.0, 4.5, 5, good=False, crashes=0), 1.0)  # a 2.5 s tip shaping
    stats.add_slot(Slot(4.5, 5.5, 0, good=True, crashes=1), 1.0)
    assert stats.good_line_fraction == pytest.approx(2.0 / 5.5)
    assert stats.score == pytest.approx(2.0 / 5.5 - 0.1)
    row = summarise("expert", [stats, EpisodeStats(seed=2, crash_penalty=0.1)])
    assert row["episodes"] == 2 and row["crashes"] == 1 and row["steps"] == 3


@pytest.mark.parametrize(
    "changes",
    [
        {"episode_s": 1.0},
        {"episode_s": 90.0},
        {"monitor_interval_s": 0.5},
        {"loop_rate_hz": 50.0},
        {"tip_change_rate_per_s": float("nan")},
        {"signals": ("Z Position",)},
    ],
)
def test_a_task_out_of_range_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        TaskConfig(**changes)  # type: ignore[arg-type]


def test_task_round_trips_through_a_dict() -> None:
    task = TaskConfig(tip_change_rate_per_s=0.3, episode_s=20.0)
    assert TaskConfig.from_dict(task.to_dict()) == task
