"""The swarm simulator as a WebSocket peer: back-off, and exactly-once over a faulty link."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from atomlab.core.clock import FakeClock, SystemClock
from atomlab.core.errors import ConnectionFailedError, InvalidInputError
from atomlab.sim.swarm import ScaledClock, SwarmSimulator
from atomlab.sim.swarm_channel import Backoff
from atomlab.sim.swarm_wire import CommandPayload
from atomlab.sim.swarm_world import (
    FaultConfig,
    GroundTruthLog,
    SwarmConfig,
    SwarmWorld,
    read_ground_truth,
)
from atomlab.swarm.link import SimulatorLink
from tests.swarm.link_harness import WAIT_S, EventRecorder, serve_link

TERMINAL = {"completed", "failed"}


def test_backoff_doubles_from_one_second_up_to_sixty_and_resets() -> None:
    backoff = Backoff()
    assert [backoff.next_delay() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    backoff.reset()
    assert backoff.next_delay() == 1


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}/ws/isaac"


async def test_reconnect_attempts_wait_1_2_4_up_to_60_seconds(tmp_path: Path) -> None:
    clock = FakeClock()
    world = SwarmWorld(SwarmConfig(agents=2, defects=0))
    sim = SwarmSimulator(world, url=refused_url(), clock=clock)
    with pytest.raises(ConnectionFailedError, match="after 9 attempts"):
        await sim.connect_loop(max_attempts=9)
    assert sim.reconnect_delays == [1, 2, 4, 8, 16, 32, 60, 60]
    assert clock.sleeps == sim.reconnect_delays  # waited on the injected clock, not for real


def test_a_url_that_is_not_websocket_is_refused() -> None:
    world = SwarmWorld(SwarmConfig(agents=2, defects=0))
    with pytest.raises(InvalidInputError, match="ws://"):
        SwarmSimulator(world, url="http://127.0.0.1:8000/ws/isaac")


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, faults: FaultConfig, *, agents: int = 4, defects: int = 3, **link_kw: Any
) -> AsyncIterator[tuple[SimulatorLink, EventRecorder, SwarmSimulator]]:
    """A link on uvicorn and a simulator (20x faster than real time) connected to it."""
    events = EventRecorder()
    link = SimulatorLink(clock=SystemClock(), on_event=events, ack_timeout_s=0.1, **link_kw)
    config = SwarmConfig(
        agents=agents, seed=5, defects=defects, drift_prob=0.0, faults=faults, status_interval_s=1.0
    )
    world = SwarmWorld(config, ground_truth=GroundTruthLog(tmp_path / "gt.jsonl"))
    async with serve_link(link) as url:
        sim = SwarmSimulator(
            world, url=url, clock=ScaledClock(20.0), ack_timeout_s=2.0, max_resends=50
        )
        task = asyncio.create_task(sim.run())
        try:
            await events.wait_for("link_up")
            yield link, events, sim
        finally:
            sim.stop()
            await asyncio.wait_for(task, WAIT_S)


def terminal_keys(events: EventRecorder) -> dict[str, str]:
    return {
        r["idempotency_key"]: r["status"]
        for r in events.of("command_result")
        if r["status"] in TERMINAL
    }


async def wait_terminal(events: EventRecorder, keys: set[str]) -> dict[str, str]:
    async with asyncio.timeout(30):
        while not keys <= set(terminal_keys(events)):
            await events.wait_for("command_result", count=len(events.of("command_result")) + 1)
    return terminal_keys(events)


async def test_the_simulator_introduces_its_agents_and_reports_its_defects(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, FaultConfig()) as (_link, events, sim):
        (up,) = events.of("link_up")
        assert [a["agent_id"] for a in up["agents"]] == [f"agent-{i:02d}" for i in range(4)]
        assert up["bounds"]["x_max"] == 20.0
        # 20x faster than real time: to the service (real time) agents are 20x faster too.
        assert up["agents"][0]["speed_nm_s"] == 40.0
        assert up["heartbeat_interval_s"] == 0.5
        (data,) = await events.wait_for("sensor_data")
        assert len(data["coordinates"]) == 3
        expected = {(d.x / 10, d.y / 10) for d in sim.world.surface.defects}
        assert {(c["x"], c["y"]) for c in data["coordinates"]} == expected
        beat = (await events.wait_for("heartbeat"))[0]
        assert beat["agents_alive"] == [f"agent-{i:02d}" for i in range(4)]


async def test_a_repair_command_round_trip_reports_processing_then_completed(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, FaultConfig()) as (link, events, sim):
        defect = sim.world.surface.defects[0]
        command = {
            "command_id": "c1",
            "agent_id": "agent-00",
            "action": "repair",
            "target": {"x": defect.x / 10, "y": defect.y / 10},
        }
        await link.send_command(command, idempotency_key="k1", correlation_id="corr-1")
        await wait_terminal(events, {"k1"})
        cids = {cid for kind, cid in events.correlation_ids if kind == "command_result"}
        assert cids == {"corr-1"}  # results come back under the command's correlation id
        statuses = [r["status"] for r in events.of("command_result")]
        assert statuses[0] == "processing"
        assert statuses[-1] in TERMINAL
        assert events.of("command_delivered")[0]["idempotency_key"] == "k1"


def moves(n: int, agents: int) -> list[tuple[str, dict[str, Any]]]:
    """Small moves that keep every agent in its own corner of the surface."""
    out = []
    for i in range(n):
        agent = i % agents
        col, row = agent % 2, agent // 2
        x = 6.7 + 6.6 * col + 0.1 * (i % 3)
        y = 6.7 + 6.6 * row
        out.append(
            (
                f"k{i}",
                {
                    "command_id": f"c{i}",
                    "agent_id": f"agent-{agent:02d}",
                    "action": "move",
                    "target": {"x": round(x, 1), "y": round(y, 1)},
                },
            )
        )
    return out


def executions(tmp_path: Path) -> list[str]:
    return [r["key"] for r in read_ground_truth(tmp_path / "gt.jsonl") if r["kind"] == "execute"]


async def test_lost_duplicated_and_malformed_frames_never_run_a_command_twice(
    tmp_path: Path,
) -> None:
    faults = FaultConfig(drop_prob=0.15, duplicate_prob=0.2, ack_loss_prob=0.2, malformed_prob=0.05)
    script = moves(24, agents=4)
    async with running(tmp_path, faults, max_resends=50) as (link, events, sim):
        for key, command in script:
            await link.send_command(command, idempotency_key=key)
        done = await wait_terminal(events, {key for key, _ in script})
        assert set(done.values()) == {"completed"}
        assert sim.world.faults.counts.get("drop", 0) > 0
        assert sim.world.faults.counts.get("duplicate", 0) > 0
        assert sim.world.faults.counts.get("ack_loss", 0) > 0
    ran = executions(tmp_path)
    assert sorted(ran) == sorted(key for key, _ in script)  # each exactly once


async def test_commands_survive_forced_disconnects(tmp_path: Path) -> None:
    faults = FaultConfig(disconnect_every_s=3.0)
    script = moves(16, agents=4)
    async with running(tmp_path, faults) as (link, events, sim):
        for i, (key, command) in enumerate(script):
            await link.send_command(command, idempotency_key=key)
            if i % 4 == 3:
                await events.wait_for("link_down", count=i // 4 + 1)
        done = await wait_terminal(events, {key for key, _ in script})
        assert set(done.values()) == {"completed"}
        assert sim.connections >= 4
        assert sim.reconnect_delays and set(sim.reconnect_delays) == {1.0}  # reset after success
    ran = executions(tmp_path)
    assert sorted(ran) == sorted(key for key, _ in script)


async def test_a_resumed_simulator_reports_the_commands_its_restart_cut_off(
    tmp_path: Path,
) -> None:
    config = SwarmConfig(agents=2, seed=2, defects=0)
    gt = tmp_path / "gt.jsonl"
    before = SwarmWorld(config, ground_truth=GroundTruthLog(gt))
    payload = {"command_id": "c1", "agent_id": "agent-00", "action": "move",
               "target": {"x": 1.0, "y": 1.0}}  # fmt: skip
    before.submit(CommandPayload.model_validate(payload), "k1")
    before.step()
    before.close()
    events = EventRecorder()
    link = SimulatorLink(clock=SystemClock(), on_event=events)
    async with serve_link(link) as url:
        sim = SwarmSimulator(SwarmWorld.resume(config, gt), url=url, clock=ScaledClock(20.0))
        task = asyncio.create_task(sim.run())
        try:
            (result,) = await events.wait_for("command_result")
        finally:
            sim.stop()
            await asyncio.wait_for(task, WAIT_S)
    assert (result["idempotency_key"], result["status"]) == ("k1", "failed")
    assert result["reason"] == "simulator_restarted"
