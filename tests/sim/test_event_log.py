"""The simulator's ground-truth event log: every tip event reaches the file once, in order."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from atomlab.sim import Disturbances, EventLogWriter, StmPhysics, read_event_log
from atomlab.surface import Surface
from tests.conftest import CliResult

LAUNCH = [sys.executable, "-c", "from atomlab.cli.main import main; main()"]


def test_each_event_is_written_once_in_order(tmp_path: Path) -> None:
    physics = StmPhysics(Surface.generate(1), seed=1, disturbances=Disturbances.none())
    log = EventLogWriter(physics, tmp_path / "events.jsonl")
    physics.tip_change()
    assert log.flush() == 1
    assert log.flush() == 0  # nothing new
    physics.advance_to(0.5)
    physics.tip_change()
    physics.restore_tip("tip shaper")
    assert log.flush() == 2
    log.close()
    events = read_event_log(tmp_path / "events.jsonl")
    assert [e.kind for e in events] == ["tip_change", "tip_change", "tip_restored"]
    assert events[0].t_s == 0.0 and events[1].t_s > 0.49
    assert events[2].detail == "tip shaper"


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"t_s": 1.0, "kind": "tip_change", "detail": ""}\n{"t_s": 2.0, "ki')
    assert [e.t_s for e in read_event_log(path)] == [1.0]
    assert read_event_log(tmp_path / "missing.jsonl") == []


def test_sim_spm_writes_tip_changes_at_the_rate_asked(tmp_path: Path) -> None:
    """A real process with a very high tip-change rate: events appear in the file while it runs."""
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen(
        [
            *LAUNCH,
            "sim",
            "spm",
            "--port",
            "0",
            "--json",
            "--tip-change-rate",
            "200",
            "--loop-rate",
            "500",
            "--events-file",
            str(events),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["tip_change_rate_per_s"] == 200.0
        assert ready["loop_rate_hz"] == 500.0
        # the physics runs on its own tick; at 200 changes/s the first lands within milliseconds
        logged = 0
        while logged == 0 and proc.poll() is None:
            logged = len(read_event_log(events))
        assert logged > 0
        assert all(e.kind == "tip_change" for e in read_event_log(events))
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 143


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--no-disturbances", "--tip-change-rate", "0.1"], "--tip-change-rate"),
        (["--tip-change-rate", "nan"], "--tip-change-rate"),
        (["--loop-rate", "50"], "--loop-rate"),
    ],
)
def test_bad_simulator_options_exit_3_naming_the_option(
    cli: Callable[..., CliResult], options: list[str], named: str
) -> None:
    result = cli("sim", "spm", "--port", "0", "--json", *options)
    assert result.exit_code == 3
    assert named in result.json["error"]["message"]
