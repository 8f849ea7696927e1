"""Signals, kill -9 and parallel runs with real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from atomlab.tracking import RunIndex, iter_jsonl

from .conftest import atomlab_process, wait_until


def _running_run(home: Path) -> dict:
    """The run.json of the one run in ``home`` once its first step's process is up."""

    def probe() -> dict | None:
        for path in (home / "runs").glob("*/run.json"):
            try:
                data = json.loads(path.read_text())
            except ValueError:
                return None  # never happens: run.json is replaced atomically
            if data["steps"][0].get("pid"):
                return data
        return None

    return wait_until(probe)


def _cleanup_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


SIGNALS = [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 143)]


def test_signals_cancel_the_run_and_stop_the_step_process_group(tmp_path):
    """SIGTERM, SIGINT and SIGHUP, each to its own real `atomlab runs exec` (run side by side)."""
    homes = [tmp_path / signal.Signals(s).name for s, _ in SIGNALS]
    procs = [
        atomlab_process(
            home, "runs", "exec", "-p", "sig", "-s", "long=sleep 60", "-s", "after=true"
        )
        for home in homes
    ]
    runs = [_running_run(home) for home in homes]
    try:
        for proc, (signum, _) in zip(procs, SIGNALS, strict=True):
            proc.send_signal(signum)
        errors = [proc.communicate(timeout=30)[1].decode() for proc in procs]
    finally:
        for data in runs:
            _cleanup_group(data["steps"][0]["pid"])
    for proc, (signum, exit_code), data, err in zip(procs, SIGNALS, runs, errors, strict=True):
        assert proc.returncode == exit_code, err
        record = json.loads(Path(data["run_dir"], "run.json").read_text())
        assert record["status"] == "cancelled"
        assert record["exit_signal"] == signal.Signals(signum).name
        assert [s["status"] for s in record["steps"]] == ["cancelled", "skipped"]
        step_pid = data["steps"][0]["pid"]
        assert not psutil.pid_exists(step_pid) or psutil.Process(step_pid).status() == "zombie"
        events = [e["event"] for e in iter_jsonl(Path(data["run_dir"]) / "events.jsonl")]
        assert "run.cancelled" in events and "step.process_stopped" in events


def _group_alive(pgid: int) -> bool:
    for proc in psutil.process_iter():
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


def test_kill_9_run_is_marked_crashed_and_its_step_group_stopped_by_next_runs_command(home, cli):
    # the step leaves a grandchild in its group, as a shell pipeline or a dataloader would
    step = "sh -c 'sleep 300 & sleep 300'"
    proc = atomlab_process(home, "runs", "exec", "-p", "crash", "--shell", "-s", f"long={step}")
    data = _running_run(home)
    step_pid = data["steps"][0]["pid"]
    try:
        wait_until(lambda: len([p for p in psutil.process_iter() if _in_group(p, step_pid)]) >= 2)
        proc.kill()
        proc.wait(timeout=20)
        assert json.loads(Path(data["run_dir"], "run.json").read_text())["status"] == "running"
        assert _group_alive(step_pid)  # the tracker died; its step did not
        result = cli("runs", "list", "--json")
        assert result.exit_code == 0
        (row,) = result.json["runs"]
        assert row["status"] == "crashed"
        record = json.loads(Path(data["run_dir"], "run.json").read_text())
        assert record["status"] == "crashed" and record["steps"][0]["status"] == "failed"
        assert f"step process group(s) [{step_pid}] left running were stopped" in record["reason"]
        assert not _group_alive(step_pid)
        crashed = [e for e in iter_jsonl(Path(data["run_dir"]) / "events.jsonl")][-1]
        assert crashed["event"] == "run.crashed" and crashed["stopped_step_groups"] == [step_pid]
    finally:
        _cleanup_group(step_pid)


def _in_group(proc: psutil.Process, pgid: int) -> bool:
    try:
        return os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE
    except (ProcessLookupError, psutil.Error):
        return False


def test_a_watcher_reaps_a_killed_run_and_stops_its_step_group(home):
    proc = atomlab_process(home, "runs", "exec", "-p", "watched", "-s", "long=sleep 300")
    data = _running_run(home)
    step_pid = data["steps"][0]["pid"]
    watcher = atomlab_process(home, "runs", "watch", data["run_id"], "--interval", "1", "--json")
    try:
        proc.kill()
        proc.wait(timeout=20)
        killed = time.monotonic()
        out, err = watcher.communicate(timeout=60)  # a failure bound, not the measured time
        took = time.monotonic() - killed
        print(f"the watcher ended the killed run {took:.1f} s after the kill")
        assert watcher.returncode == 1, err
        assert json.loads(out)["run"]["status"] == "crashed"
        assert not _group_alive(step_pid)
    finally:
        watcher.kill()
        _cleanup_group(step_pid)


def test_live_run_is_never_reaped(home, cli):
    proc = atomlab_process(
        home, "runs", "exec", "-p", "alive", "-s", "long=sleep 60", "--expect", "long=120"
    )
    data = _running_run(home)
    try:
        result = cli("runs", "list", "--json")
        assert result.json["runs"][0]["status"] == "running"
        status = cli("runs", "status", "--json").json["run"]
        assert (status["current_step"], status["position"], status["steps_total"]) == ("long", 1, 1)
        assert 0 < status["eta"]["remaining_s"] <= 120
        assert status["eta"]["basis"] == "priors"
        ps = cli("runs", "ps", "--json")
        assert [r["run_id"] for r in ps.json["runs"]] == [data["run_id"]]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        _cleanup_group(data["steps"][0]["pid"])


WORKER = """
import sys
from atomlab.core.settings import TrackingSettings
from atomlab.tracking import RunTracker
steps = [f"s{i}" for i in range(20)]
with RunTracker("par", steps, home=sys.argv[1], monitor=False, handle_signals=False,
                settings=TrackingSettings(gpu=False, telemetry_interval_s=1e-6)) as run:
    for name in steps:
        with run.step(name):
            run.tick()
print(run.run_id)
"""


def test_eight_parallel_runs_lose_no_line_and_share_no_id(home):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(home)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(8)
    ]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        ids.append(out.decode().strip())
    assert len(set(ids)) == 8
    for run_id in ids:
        run_dir = home / "runs" / run_id
        events = list(iter_jsonl(run_dir / "events.jsonl"))
        assert len(events) == 2 + 2 * 20  # run start/end + start/end of each step
        raw = (run_dir / "telemetry.jsonl").read_bytes().splitlines()
        assert len(raw) == 21 and all(json.loads(line) for line in raw)
    with RunIndex.open(home) as index:
        rows = index.list_runs(limit=100)
    assert sorted(r.run_id for r in rows) == sorted(ids)
    assert {r.status for r in rows} == {"completed"}


def test_watch_without_a_run_follows_the_live_run_not_a_newer_finished_one(tmp_path, cli):
    """A run still going beats a newer run that already ended (e.g. a perf-test in between)."""
    home = Path(os.environ["ATOMLAB_HOME"])
    gate = tmp_path / "go"
    wait_for_gate = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    live = atomlab_process(
        home, "runs", "exec", "-p", "long", "--shell", "-s", f"w={wait_for_gate}"
    )
    live_run = _running_run(home)
    try:
        newer = cli("runs", "exec", "-p", "quick", "-s", "a=true", "--json")
        assert newer.exit_code == 0 and newer.json["run"]["created_at"] > live_run["created_at"]
        watch = atomlab_process(home, "runs", "watch", "--interval", "0.2")
        assert watch.stderr is not None
        first = watch.stderr.readline().decode()  # written once watch has picked its run
        gate.touch()
        out, err = watch.communicate(timeout=60)
    finally:
        gate.touch()
        live.communicate(timeout=60)
    assert watch.returncode == 0, err.decode()
    assert first.startswith(f"Run {live_run['run_id']} (long): running")
    assert out.decode().startswith(f"Run {live_run['run_id']} (long): completed")
