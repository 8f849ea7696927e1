"""The SQLite history index: filters, resolution, retention that never touches live runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.errors import InvalidInputError, NotFoundError
from atomlab.core.settings import TrackingSettings
from atomlab.tracking import RunIndex, RunTracker, parse_since, read_run


def finished_run(
    home: Path, clock: FakeClock, pipeline: str = "p", fail: bool = False, keep: int | None = 20
) -> str:
    tracker = RunTracker(
        pipeline,
        ["a"],
        home=home,
        clock=clock,
        settings=TrackingSettings(gpu=False, retention_runs=keep),
        monitor=False,
        handle_signals=False,
        telemetry=False,
    )
    try:
        with tracker, tracker.step("a"):
            clock.advance(10)
            if fail:
                raise RuntimeError("nope")
    except RuntimeError:
        pass
    clock.advance(60)
    return tracker.run_id


def test_list_filters_by_status_pipeline_since_and_limit(home, clock):
    ids = [finished_run(home, clock, "p", fail=i % 3 == 0) for i in range(9)]
    other = finished_run(home, clock, "q")
    with RunIndex.open(home) as index:
        newest = index.list_runs(limit=3)
        assert [r.run_id for r in newest] == [other, ids[8], ids[7]]
        failed = index.list_runs(status="failed", limit=100)
        assert [r.run_id for r in failed] == [ids[6], ids[3], ids[0]]
        assert {r.pipeline for r in index.list_runs(pipeline="q")} == {"q"}
        since = index.list_runs(since=newest[1].created_at, limit=100)
        assert [r.run_id for r in since] == [other, ids[8]]
        with pytest.raises(InvalidInputError, match="--status 'broken'"):
            index.list_runs(status="broken")


def test_resolve_by_prefix_latest_and_unknown(home, clock):
    first = finished_run(home, clock)
    second = finished_run(home, clock)
    with RunIndex.open(home) as index:
        assert index.resolve(None).run_id == second
        assert index.resolve("latest").run_id == second
        assert index.resolve(first[:-2]).run_id == first
        with pytest.raises(NotFoundError, match="no run 'zzz'"):
            index.resolve("zzz")
        with pytest.raises(InvalidInputError, match="several runs"):
            index.resolve("2026")


def test_parse_since_accepts_dates_and_ages():
    assert parse_since("2026-01-31") == "2026-01-31T00:00:00.000000Z"
    assert parse_since("2026-01-31T12:00+02:00") == "2026-01-31T10:00:00.000000Z"
    assert parse_since("2h") < parse_since("1h")
    with pytest.raises(InvalidInputError, match="not a date"):
        parse_since("yesterday")


def test_prune_keeps_newest_and_never_deletes_a_running_run(home, clock):
    live = RunTracker(
        "p",
        ["a"],
        home=home,
        clock=clock,
        settings=TrackingSettings(gpu=False),
        monitor=False,
        handle_signals=False,
        telemetry=False,
    )
    live.start()
    clock.advance(60)
    ids = [finished_run(home, clock, keep=100) for _ in range(25)]
    (home / "runs" / "perf-notes").mkdir()  # a folder that is not a run: never touched
    with RunIndex.open(home) as index:
        would = index.prune(keep=20, dry_run=True)
        assert sorted(would) == sorted(ids[:5])
        assert all((home / "runs" / r).exists() for r in would)
        removed = index.prune(keep=20)
        assert sorted(removed) == sorted(ids[:5])
        assert index.count() == 21
    assert not any((home / "runs" / r).exists() for r in removed)
    assert live.run_dir.exists() and (home / "runs" / "perf-notes").exists()
    live.finish()


def test_retention_is_off_unless_configured_and_then_at_least_one():
    assert TrackingSettings().retention_runs is None
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        TrackingSettings(retention_runs=0)


def test_runs_are_never_deleted_unless_retention_is_configured(home, clock):
    for _ in range(22):
        finished_run(home, clock, keep=None)
    with RunIndex.open(home) as index:
        assert index.count() == 22
    assert len(list((home / "runs").glob("*/run.json"))) == 22


def test_configured_retention_applies_at_each_new_run(home, clock):
    for _ in range(22):
        finished_run(home, clock)  # retention_runs=20
    with RunIndex.open(home) as index:
        assert index.count() == 21  # 20 kept + the run that pruned (finished after pruning)


def test_reindex_rebuilds_from_run_directories(home, clock):
    ids = {finished_run(home, clock) for _ in range(3)}
    (home / "runs" / "index.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (home / "runs" / f"index.sqlite{suffix}").unlink(missing_ok=True)
    with RunIndex.open(home) as index:
        assert index.count() == 0
        assert index.rebuild() == 3
        assert {r.run_id for r in index.list_runs()} == ids


def test_damaged_run_json_is_a_clear_error(home, clock):
    run_id = finished_run(home, clock)
    (home / "runs" / run_id / "run.json").write_text("{not json")
    with RunIndex.open(home) as index, pytest.raises(InvalidInputError, match="not valid"):
        index.load(run_id)


def test_run_json_is_never_seen_half_written(home, clock):
    """A reader racing the writer always parses a complete record."""
    import threading

    tracker = RunTracker(
        "p",
        [f"s{i}" for i in range(100)],
        home=home,
        clock=clock,
        settings=TrackingSettings(gpu=False),
        monitor=False,
        handle_signals=False,
        telemetry=False,
    )
    tracker.start()
    path = tracker.run_dir / "run.json"
    stop = threading.Event()
    bad: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                json.loads(path.read_bytes())
            except ValueError as exc:
                bad.append(str(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(100):
        with tracker.step(f"s{i}"):
            clock.advance(1)
    stop.set()
    thread.join()
    tracker.finish()
    assert bad == []
    assert read_run(tracker.run_dir).steps_done == 100
    shutil.rmtree(tracker.run_dir)


def _dead_run(home: Path, *, host: str, heartbeat_at: str) -> str:
    """A run left 'running' by a process that is gone (nothing holds its lock)."""
    from datetime import UTC, datetime

    from atomlab.tracking.models import RunRecord, RunStatus
    from atomlab.tracking.store import create_run_dir, save_run

    run_id, run_dir = create_run_dir(home / "runs", "p", datetime.now(UTC))
    record = RunRecord(
        run_id=run_id,
        pipeline="p",
        status=RunStatus.RUNNING,
        created_at=heartbeat_at,
        heartbeat_at=heartbeat_at,
        host=host,
        pid=999_999,
        run_dir=str(run_dir),
    )
    save_run(record)
    with RunIndex.open(home) as index:
        index.upsert(record)
    return run_id


def test_reaper_on_another_host_waits_for_a_stale_heartbeat(home):
    from atomlab.core.clock import utc_now_iso

    fresh = _dead_run(home, host="other-host", heartbeat_at=utc_now_iso())
    stale = _dead_run(home, host="other-host", heartbeat_at="2020-01-01T00:00:00.000000Z")
    with RunIndex.open(home) as index:
        assert index.reap(stale_after_s=15) == [stale]
        statuses = {r.run_id: r.status for r in index.list_runs()}
    assert statuses == {fresh: "running", stale: "crashed"}
    assert "SIGKILL" in (read_run(home / "runs" / stale).reason or "")
