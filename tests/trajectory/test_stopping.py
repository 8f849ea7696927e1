"""A real recorder process: Ctrl-C and SIGTERM flush and mark the run, kill -9 leaves a readable
database, and readers query while it records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atomlab.core.errors import AtomlabError
from atomlab.trajectory import MonitorConfig, load_staged, open_store, save_staged

CLI = [sys.executable, "-c", "from atomlab.cli.main import main; main()"]
DEADLINE_S = 30.0


def _stage(home: Path, name: str) -> Path:
    path = home / "trajectory" / "monitor-config.json"
    save_staged(path, MonitorConfig(run_name=name, interval_s=0.02))
    return path


def _start(home: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "trajectory", "monitor", "run", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ATOMLAB_HOME": str(home)},
    )


def _wait_for_samples(db: Path, proc: subprocess.Popen[str], at_least: int) -> int:
    """Cross-process readiness: poll the database (read-only) until the recorder has written."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with open_store(db) as store:
                samples = len(list(store.samples("signals")))
        except AtomlabError:
            samples = 0
        if samples >= at_least:
            return samples
        time.sleep(0.05)
    raise AssertionError(f"the recorder wrote fewer than {at_least} samples in {DEADLINE_S} s")


@pytest.mark.parametrize(
    ("signum", "exit_code", "status"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
def test_a_signal_flushes_marks_the_run_and_prints_the_summary(
    sim, isolated_home, signum, exit_code, status
):
    staged = _stage(isolated_home, "stopped")
    db = isolated_home / "trajectories.sqlite"
    proc = _start(isolated_home, sim.ports[0])
    _wait_for_samples(db, proc, 10)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == exit_code, err
    body = json.loads(out)
    assert body["ok"] is False and body["exit_code"] == exit_code
    summary = body["error"]["details"]
    store = open_store(db)
    run = store.run("stopped")
    assert run.status == summary["status"] == status
    assert run.samples == summary["samples"] == len(list(store.samples("specs")))  # all flushed
    assert "Traceback" not in err
    assert load_staged(staged).run_name == ""  # cleared after the interrupted run


def test_kill_9_leaves_a_readable_database_and_readers_work_during_recording(sim, isolated_home):
    staged = _stage(isolated_home, "killed")
    db = isolated_home / "trajectories.sqlite"
    proc = _start(isolated_home, sim.ports[0])
    try:
        first = _wait_for_samples(db, proc, 5)
        with sim_client(sim) as other:
            other.call("Bias.Set", {"bias_v": 0.4})
        # a reader during the recording: the CLI query path, while the recorder writes
        listed = subprocess.run(
            [*CLI, "trajectory", "action", "list"],
            capture_output=True,
            text=True,
            env={**os.environ, "ATOMLAB_HOME": str(isolated_home)},
        )
        assert listed.returncode == 0 and json.loads(listed.stdout)["run_name"] == "killed"
        assert _wait_for_samples(db, proc, first + 20) > first
        with open_store(db) as store:
            assert store.run().status == "running" and store.run().writer_alive is True
    finally:
        proc.kill()
        proc.communicate(timeout=DEADLINE_S)
    # The main file alone (no -wal beside it) holds the schema and the run (checkpointed at
    # its creation and every few seconds), as a copy of just the .sqlite would.
    alone = isolated_home / "copy" / "alone.sqlite"
    alone.parent.mkdir()
    alone.write_bytes(db.read_bytes())
    with open_store(alone) as copy:
        assert copy.run("killed").name == "killed"
    store = open_store(db)
    run = store.run("killed")  # read-only: the dead recorder reads as crashed by itself
    assert run.status == "crashed" and run.writer_alive is False
    assert "pid" in (run.stop_reason or "")
    assert len(list(store.samples("signals"))) >= first + 20
    assert store.connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = store.connection.execute("SELECT status FROM runs WHERE name = 'killed'")
    assert stored.fetchone()[0] == "running"  # a read-only reader changes nothing
    listed = subprocess.run(
        [*CLI, "trajectory", "runs", "list"],
        capture_output=True,
        text=True,
        env={**os.environ, "ATOMLAB_HOME": str(isolated_home)},
    )
    assert json.loads(listed.stdout)["runs"][0]["status"] == "crashed"
    stored = store.connection.execute("SELECT status FROM runs WHERE name = 'killed'")
    assert stored.fetchone()[0] == "crashed"  # any query command marks it
    assert load_staged(staged).run_name == ""  # consumed when the run started


def sim_client(sim):
    from atomlab.instrument import NanonisClient

    return NanonisClient("127.0.0.1", sim.ports[0])
