"""``atomlab sim swarm``: the simulator as users start it."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atomlab.core.clock import SystemClock
from atomlab.sim.swarm_world import read_ground_truth
from atomlab.swarm.link import SimulatorLink
from tests.swarm.link_harness import EventRecorder, serve_link


def free_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}/ws/isaac"


def test_an_unreachable_service_ends_with_a_connection_error(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    result = cli(
        "sim", "swarm", "--url", free_url(), "--agents", "2", "--connect-attempts", "1",
        "--ground-truth", str(tmp_path / "gt.jsonl"), "--json",
    )  # fmt: skip
    assert result.exit_code == 5
    assert result.json["error"]["type"] == "connection_error"
    assert "after 1 attempts" in result.json["error"]["message"]


def test_a_bad_probability_is_refused_as_invalid_input(cli: Callable[..., Any]) -> None:
    result = cli("sim", "swarm", "--drop", "1.5", "--json")
    assert result.exit_code == 3
    assert "--drop" in result.json["error"]["message"]


async def test_the_simulator_runs_against_the_service_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    events = EventRecorder()
    link = SimulatorLink(clock=SystemClock(), on_event=events)
    gt = tmp_path / "gt.jsonl"
    async with serve_link(link) as url:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "atomlab", "sim", "swarm", "--url", url, "--agents", "4",
            "--seed", "3", "--time-scale", "10", "--ground-truth", str(gt), "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            (up,) = await events.wait_for("link_up")
            assert len(up["agents"]) == 4
            await events.wait_for("sensor_data")
            await events.wait_for("agent_status")
        finally:
            proc.send_signal(signal.SIGINT)
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 130, stderr.decode()
    envelope = json.loads(stdout)
    assert envelope["error"]["type"] == "interrupted"
    assert f"ground truth in {gt}" in envelope["error"]["message"]  # what a human sees
    details = envelope["error"]["details"]
    assert details["ground_truth"] == str(gt)
    assert details["connections"] == 1
    records = read_ground_truth(gt)
    assert records[0]["kind"] == "meta" and records[-1]["kind"] == "summary"


def test_resume_continues_the_world_of_an_earlier_log(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    gt = str(tmp_path / "gt.jsonl")
    args = ("sim", "swarm", "--url", free_url(), "--agents", "2", "--seed", "4",
            "--connect-attempts", "1", "--ground-truth", gt, "--json")  # fmt: skip
    assert cli(*args).exit_code == 5
    assert cli(*args, "--resume").exit_code == 5
    kinds = [r["kind"] for r in read_ground_truth(gt)]
    assert kinds.count("meta") == 1 and kinds.count("resume") == 1
    other = cli(*args[:-1], "--seed", "5", "--resume", "--json")
    assert other.exit_code == 3
    assert "another world" in other.json["error"]["message"]


def test_resume_without_a_log_names_the_missing_file(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    missing = tmp_path / "none.jsonl"
    result = cli("sim", "swarm", "--resume", "--ground-truth", str(missing), "--json")
    assert result.exit_code == 3
    assert str(missing) in result.json["error"]["message"]
