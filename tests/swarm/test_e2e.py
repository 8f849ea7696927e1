"""End to end: the real service on uvicorn (127.0.0.1, port 0) and the real swarm simulator
over /ws/isaac, with forced disconnects, lost frames, agent deaths and a server restart.

Correctness is judged on the simulator's own ground truth, not the coordinator's bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from atomlab.core.settings import AtomlabSettings, load_settings
from atomlab.sim.swarm import ScaledClock, SwarmSimulator
from atomlab.sim.swarm_world import (
    FaultConfig,
    GroundTruthLog,
    SwarmConfig,
    SwarmWorld,
    read_ground_truth,
)
from atomlab.swarm import SwarmCoordinator, create_app
from atomlab.swarm.models import Action, CommandStatus, DefectStatus

WAIT_S = 45.0  # a safety net against a hang, never a timing assertion
TIME_SCALE = 20.0
LINK_TOKEN = "e2e-link-token-0123456789"  # the simulator presents it in its handshake


def _settings(home: Path) -> AtomlabSettings:
    swarm = {
        "heartbeat_interval_s": 1.0,
        "missed_heartbeats": 3,
        "ack_timeout_s": 0.2,
        "command_timeout_s": 5.0,
        "retry_budget": 4,
        "link_token": LINK_TOKEN,
    }
    return load_settings(overrides={"home": home, "swarm": swarm}, environ={}).settings


def _socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock


@contextlib.asynccontextmanager
async def serving(home: Path, port: int = 0) -> AsyncIterator[tuple[SwarmCoordinator, int]]:
    """The whole service (lifespan included) on uvicorn; yields its coordinator and port."""
    app = create_app(_settings(home))
    sock = _socket(port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await _until(lambda: server.started or task.done())
    try:
        yield app.state.swarm.coordinator, sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT_S)
        sock.close()


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for a condition spanning uvicorn, the service and the simulator (no common event)."""
    async with asyncio.timeout(WAIT_S):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def _simulator(tmp_path: Path, port: int, faults: FaultConfig, **config: Any) -> SwarmSimulator:
    world = SwarmWorld(
        SwarmConfig(seed=7, faults=faults, **config),
        ground_truth=GroundTruthLog(tmp_path / "ground_truth.jsonl"),
    )
    return SwarmSimulator(
        world,
        url=f"ws://127.0.0.1:{port}/ws/isaac",
        clock=ScaledClock(TIME_SCALE),
        ack_timeout_s=4.0,
        max_resends=100,
        token=LINK_TOKEN,
    )


def _settled(coordinator: SwarmCoordinator, expected: int) -> bool:
    defects = coordinator.defects.values()
    return len(coordinator.defects) >= expected and all(d.status.terminal for d in defects)


def _check_against_ground_truth(
    coordinator: SwarmCoordinator, sim: SwarmSimulator, tmp_path: Path
) -> list[dict[str, Any]]:
    world = sim.world
    assert world.violations == 0, "two agents came closer than 0.5 nm"
    assert world.min_separation_nm is None or world.min_separation_nm >= 0.5
    remaining = {f"d{d.id}" for d in world.surface.defects}
    completed = [d for d in coordinator.defects.values() if d.status is DefectStatus.COMPLETED]
    assert completed, "nothing was repaired"
    for defect in completed:  # the closed loop never believes a silent failure
        assert defect.defect_id not in remaining, f"{defect.defect_id} marked done but still there"
    records = read_ground_truth(tmp_path / "ground_truth.jsonl")
    executed = [r["key"] for r in records if r["kind"] == "execute"]
    assert len(executed) == len(set(executed)), "a command key was executed twice"
    ours = {c.command_id for c in coordinator.book.select(status=CommandStatus.COMPLETED)}
    assert ours <= set(executed), "a command counted as done was never executed"
    return records


async def test_a_scan_is_repaired_end_to_end_and_verified_by_the_ground_truth(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path / "home") as (coordinator, port):
        sim = _simulator(tmp_path, port, FaultConfig(), agents=6, defects=8)
        run = asyncio.create_task(sim.run())
        await _until(lambda: _settled(coordinator, 8))
        sim.stop()
        await run
        _check_against_ground_truth(coordinator, sim, tmp_path)
        repairs = coordinator.book.select(status=CommandStatus.COMPLETED)
        assert any(c.action is Action.SCAN for c in repairs)  # every repair was re-scanned
        assert {a.agent_id for a in coordinator.agents.values()} == set(sim.world.agents)


async def test_disconnects_lost_frames_and_agent_deaths_lose_nothing_and_run_nothing_twice(
    tmp_path: Path,
) -> None:
    faults = FaultConfig(
        drop_prob=0.05,
        duplicate_prob=0.05,
        ack_loss_prob=0.05,
        disconnect_every_s=4.0,
        agent_death_rate_per_s=0.05,
        max_dead_agents=2,
    )
    async with serving(tmp_path / "home") as (coordinator, port):
        sim = _simulator(tmp_path, port, faults, agents=6, defects=10)
        run = asyncio.create_task(sim.run())
        await _until(lambda: _settled(coordinator, 10))
        await _until(lambda: sim.world._dead() == 0 or _all_dead_noticed(coordinator, sim))
        sim.stop()
        await run
        _check_against_ground_truth(coordinator, sim, tmp_path)
    assert sim.connections >= 2, "the link was never cut"


def _all_dead_noticed(coordinator: SwarmCoordinator, sim: SwarmSimulator) -> bool:
    dead = {a.agent_id for a in sim.world.agents.values() if not a.alive}
    return all(coordinator.agents[a].status.value == "dead" for a in dead)


async def test_a_server_restart_mid_run_resumes_from_the_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with serving(home) as (first, port):
        sim = _simulator(tmp_path, port, FaultConfig(), agents=4, defects=8)
        run = asyncio.create_task(sim.run())
        await _until(lambda: len(first.book) >= 2)
        issued_before = {c.command_id for c in first.book.active()}
    async with serving(home, port) as (second, _):
        await _until(lambda: _settled(second, 8))
        sim.stop()
        await run
        assert issued_before <= {c.command_id for c in second.book.select()}
        _check_against_ground_truth(second, sim, tmp_path)
    assert sim.connections >= 2


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    from atomlab.core.logging import configure_logging

    configure_logging("WARNING", "console")
