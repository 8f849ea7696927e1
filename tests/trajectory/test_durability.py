"""kill -9 durability: checkpoints into the main file, the recorder's lease read by every reader,
and (slow) real recorders killed with SIGKILL."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from atomlab.core.clock import utc_iso
from atomlab.core.errors import AtomlabError
from atomlab.trajectory import (
    ChannelInfo,
    MonitorConfig,
    Sample,
    mark_crashed_runs,
    open_store,
    save_staged,
)

CLI = [sys.executable, "-c", "from atomlab.cli.main import main; main()"]


def _create(store, **config):
    cfg = MonitorConfig(run_name="r", signals=("s0",), specs=("p0",), **config)
    channel = [ChannelInfo(label="s0", unit="m")]
    return store.create_run(
        cfg,
        signals=channel,
        specs=[ChannelInfo(label="p0", unit="V")],
        instrument={},
        started_at_utc="2026-01-01T00:00:00.000000Z",
    )


def _samples(n: int) -> list[Sample]:
    return [Sample(k, k, k * 0.1, k * 0.1, 0.001, (float(k),), (0.1,)) for k in range(n)]


def _alone(db: Path, tmp_path: Path) -> Path:
    """A copy of the main database file without its -wal (what a careless backup takes)."""
    copy = tmp_path / "copy" / "alone.sqlite"
    copy.parent.mkdir(exist_ok=True)
    copy.write_bytes(db.read_bytes())
    return copy


@pytest.mark.parametrize(("rotate_entries", "expected"), [(10, 25), (10_000, 0)])
def test_a_segment_rotation_checkpoints_the_wal_into_the_main_file(
    db, tmp_path, rotate_entries, expected
):
    with open_store(db, read_only=False) as store:  # held open: the WAL is not folded at close
        run = _create(store, rotate_entries=rotate_entries)
        writer = store.record_writer(
            run, n_signals=1, n_specs=1, flush_interval_s=60, max_batch=1000
        )
        for sample in _samples(25):
            writer.put(sample)
        writer.flush()
        with open_store(_alone(db, tmp_path)) as copy:
            assert copy.run("r").name == "r"  # the run row is checkpointed at creation
            assert len(list(copy.samples("signals", "r"))) == expected
        writer.close()


def _set(db: Path, **columns: object) -> None:
    with open_store(db, read_only=False) as store, store.connection:
        for key, value in columns.items():
            store.connection.execute(f"UPDATE runs SET {key} = ?", (value,))  # noqa: S608


def test_a_run_from_another_host_is_judged_by_its_lease(db):
    with open_store(db, read_only=False) as store:
        _create(store)
    now = datetime.now(UTC)
    _set(db, hostname="elsewhere", lease_expires_utc=utc_iso(now + timedelta(seconds=60)))
    with open_store(db) as reader:
        run = reader.run("r")
        assert run.status == "running" and run.writer_alive is None  # cannot tell: trust it
    assert mark_crashed_runs(db) == []
    _set(db, lease_expires_utc=utc_iso(now - timedelta(seconds=1)))
    with open_store(db) as reader:
        run = reader.run("r")
        assert run.status == "crashed" and run.writer_alive is False
        assert "lease" in (run.stop_reason or "")
        stored = reader.connection.execute("SELECT status FROM runs").fetchone()[0]
        assert stored == "running"  # a read-only reader judged it without writing
    assert mark_crashed_runs(db) == ["r"]
    with open_store(db) as reader:
        assert reader.connection.execute("SELECT status FROM runs").fetchone()[0] == "crashed"


def test_a_reused_pid_does_not_keep_a_dead_recorders_run_alive(db):
    with open_store(db, read_only=False) as store:
        _create(store)
        assert store.run("r").writer_alive is True  # this process recorded it
    _set(db, pid_started=1.0)  # the pid is alive, but it is another (younger) process
    with open_store(db) as reader:
        assert reader.run("r").status == "crashed"
    with open_store(db, read_only=False) as writer:  # a recorder opening it marks it
        stored = writer.connection.execute("SELECT status FROM runs").fetchone()[0]
        assert stored == "crashed"


def test_a_recorder_writing_again_after_being_marked_is_running_again(db):
    with open_store(db, read_only=False) as store:
        run = _create(store)
        with store.connection:
            store.connection.execute("UPDATE runs SET status = 'crashed', stop_reason = 'x'")
        writer = store.record_writer(run, n_signals=1, n_specs=1, flush_interval_s=1, max_batch=1)
        writer.put(_samples(1)[0])
        writer.close()
        back = store.run("r")
        assert back.status == "running" and back.stop_reason is None


@pytest.mark.slow
def test_kill_9_of_real_recorders_loses_little_and_reads_crashed(sim, tmp_path):
    """Two real recorders, SIGKILLed at a random moment. The loss is measured and printed (the
    30-kill figure is in docs/trajectory.md, from benchmarks/trajectory.py); the test holds
    what must always be true: the run reads crashed, data is there, the main file alone opens
    and holds everything up to its last rotation's checkpoint."""
    rng = random.Random(1)
    for k in range(2):
        home = tmp_path / f"home-{k}"
        db = home / "trajectories.sqlite"
        save_staged(
            home / "trajectory" / "monitor-config.json",
            MonitorConfig(run_name=f"k{k}", interval_s=0.05, rotate_entries=20),
        )
        proc = subprocess.Popen(
            [*CLI, "trajectory", "monitor", "run", "--port", str(sim.ports[0])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "ATOMLAB_HOME": str(home)},
        )
        try:
            deadline = time.monotonic() + 60
            target = rng.randint(30, 70)
            while time.monotonic() < deadline:  # cross-process: poll the database
                assert proc.poll() is None, proc.communicate()
                with contextlib.suppress(AtomlabError), open_store(db) as store:
                    if store.run().samples >= target:
                        break
                time.sleep(0.02)
            killed_at = time.time()
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(30)
            proc.communicate()
        with open_store(db) as store:
            run = store.run()
            committed = len(list(store.samples("signals")))
            last = max(row["dt_s"] for row in store.samples("signals"))
        started = datetime.fromisoformat(run.started_at_utc.replace("Z", "+00:00")).timestamp()
        print(f"kill {k}: loss {killed_at - (started + last):.3f} s, {committed} samples")
        assert run.status == "crashed" and committed >= target
        with open_store(_alone(db, tmp_path)) as copy:
            alone = len(list(copy.samples("signals")))
        assert alone >= (committed // 20) * 20 - 20  # up to the last rotation's checkpoint
