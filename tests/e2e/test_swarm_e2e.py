"""The swarm service on uvicorn and the swarm simulator over a real WebSocket, with faults.

Safety and exactly-once are checked from the simulator's ground-truth log, not from what the
service believes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from pathlib import Path
from typing import Any

import httpx

from atomlab.core.settings import load_settings
from atomlab.sim.swarm import ScaledClock, SwarmSimulator
from atomlab.sim.swarm_world import (
    FaultConfig,
    GroundTruthLog,
    SwarmConfig,
    SwarmWorld,
    read_ground_truth,
)
from atomlab.swarm.api import create_app
from tests.swarm.link_harness import serve_app

SEPARATION_NM = 0.5
TERMINAL = {"completed", "failed", "unrepairable"}
LINK_TOKEN = "e2e-link-token-0123456789"
DEADLINE_S = 90.0  # a hang guard for a loaded 2-core machine, not a performance target


def service_app(tmp_path: Path, command_timeout_s: float = 10.0) -> Any:
    settings = load_settings(
        overrides={
            "home": tmp_path / "home",
            "swarm": {
                "heartbeat_interval_s": 1.0,
                "missed_heartbeats": 3,
                "ack_timeout_s": 0.5,
                "command_timeout_s": command_timeout_s,
                "link_token": LINK_TOKEN,
            },
        }
    ).settings
    return create_app(settings, db_url=f"sqlite:///{tmp_path / 'swarm.sqlite'}")


async def wait_all_terminal(client: httpx.AsyncClient, expected: int) -> list[dict[str, Any]]:
    """Poll the service (another party's state, over HTTP) until every defect is settled."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            reply = await client.get("/api/defects")
            reply.raise_for_status()
            body = reply.json()
            defects = body if isinstance(body, list) else body.get("defects", body.get("items"))
            if len(defects) >= expected and all(d["status"] in TERMINAL for d in defects):
                return list(defects)
            await asyncio.sleep(0.2)


async def wait_first_completed(client: httpx.AsyncClient) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while True:
            if (await client.get("/api/defects", params={"status": "completed"})).json():
                return
            await asyncio.sleep(0.1)


def min_separation(records: list[dict[str, Any]]) -> float:
    """Smallest distance between any two agents in any logged tick (computed here, not by the
    simulator)."""
    best = math.inf
    for record in records:
        if record["kind"] != "tick":
            continue
        for a, b in itertools.combinations(record["positions"].values(), 2):
            best = min(best, math.dist(a, b))
    return best


async def run_scenario(
    tmp_path: Path,
    faults: FaultConfig,
    *,
    agents: int,
    defects: int,
    command_timeout_s: float = 10.0,
) -> Any:
    gt = tmp_path / "gt.jsonl"
    config = SwarmConfig(agents=agents, seed=11, defects=defects, faults=faults)
    world = SwarmWorld(config, ground_truth=GroundTruthLog(gt))
    expected = len(world.surface.defects)
    async with serve_app(service_app(tmp_path, command_timeout_s), lifespan="on") as port:
        sim = SwarmSimulator(
            world, url=f"ws://127.0.0.1:{port}/ws/isaac", clock=ScaledClock(10.0), token=LINK_TOKEN
        )
        task = asyncio.create_task(sim.run())
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                settled = await wait_all_terminal(client, expected)
                metrics = (await client.get("/metrics")).text
        finally:
            sim.stop()
            await asyncio.wait_for(task, 30)
    return settled, read_ground_truth(gt), sim, metrics


async def test_every_defect_is_repaired_or_failed_and_agents_never_come_close(
    tmp_path: Path,
) -> None:
    faults = FaultConfig(drop_prob=0.05, duplicate_prob=0.05, ack_loss_prob=0.05)
    settled, records, sim, metrics = await run_scenario(tmp_path, faults, agents=8, defects=8)
    assert len(settled) == 8
    assert min_separation(records) >= SEPARATION_NM
    assert [r for r in records if r["kind"] == "violation"] == []
    keys = [r["key"] for r in records if r["kind"] == "execute"]
    assert len(keys) == len(set(keys))  # no command ran twice
    # What the service calls completed really is gone from the simulated surface.
    removed = {(d["x"], d["y"]) for d in records[0]["defects"]} - {
        (d.x, d.y) for d in sim.world.surface.defects
    }
    for defect in settled:
        where = (round(defect["position"]["x"] * 10), round(defect["position"]["y"] * 10))
        if defect["status"] == "completed":
            assert where in removed, defect
    assert "atomlab_swarm_link_connected" in metrics


async def test_forced_disconnects_and_a_dead_agent_still_settle_every_defect(
    tmp_path: Path,
) -> None:
    faults = FaultConfig(
        disconnect_every_s=3.0, agent_death_rate_per_s=0.1, max_dead_agents=1, drop_prob=0.02
    )
    settled, records, sim, _ = await run_scenario(tmp_path, faults, agents=6, defects=6)
    assert len(settled) == 6
    assert sim.connections >= 2
    faults_seen = {r["fault"] for r in records if r["kind"] == "fault"}
    assert faults_seen == {"disconnect", "agent_dead"}
    assert min_separation(records) >= SEPARATION_NM
    keys = [r["key"] for r in records if r["kind"] == "execute"]
    assert len(keys) == len(set(keys))


async def test_stuck_agents_time_out_and_their_defects_are_finished_by_others(
    tmp_path: Path,
) -> None:
    faults = FaultConfig(stuck_prob=0.15)
    settled, records, _sim, _ = await run_scenario(
        tmp_path, faults, agents=6, defects=6, command_timeout_s=1.0
    )
    assert len(settled) == 6
    assert any(r["kind"] == "fault" and r["fault"] == "stuck" for r in records)
    keys = [r["key"] for r in records if r["kind"] == "execute"]
    assert len(keys) == len(set(keys))
    assert min_separation(records) >= SEPARATION_NM


async def test_a_service_restart_mid_run_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path,
) -> None:
    gt = tmp_path / "gt.jsonl"
    world = SwarmWorld(SwarmConfig(agents=6, seed=4, defects=8), ground_truth=GroundTruthLog(gt))
    expected = len(world.surface.defects)
    async with serve_app(service_app(tmp_path), lifespan="on") as port:
        sim = SwarmSimulator(
            world, url=f"ws://127.0.0.1:{port}/ws/isaac", clock=ScaledClock(10.0), token=LINK_TOKEN
        )
        task = asyncio.create_task(sim.run())
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_first_completed(client)
    try:
        # Same database, same port: the simulator reconnects on its own.
        async with (
            serve_app(service_app(tmp_path), lifespan="on", port=port),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            settled = await wait_all_terminal(client, expected)
    finally:
        sim.stop()
        await asyncio.wait_for(task, 30)
    records = read_ground_truth(gt)
    assert len(settled) == expected
    assert sim.connections >= 2
    keys = [r["key"] for r in records if r["kind"] == "execute"]
    assert len(keys) == len(set(keys))
    assert min_separation(records) >= SEPARATION_NM


async def test_a_simulator_killed_mid_run_resumes_from_its_log(tmp_path: Path) -> None:
    gt = tmp_path / "gt.jsonl"
    config = SwarmConfig(agents=6, seed=9, defects=8)
    world = SwarmWorld(config, ground_truth=GroundTruthLog(gt))
    expected = len(world.surface.defects)
    async with serve_app(service_app(tmp_path), lifespan="on") as port:
        url = f"ws://127.0.0.1:{port}/ws/isaac"
        first = SwarmSimulator(world, url=url, clock=ScaledClock(10.0), token=LINK_TOKEN)
        task = asyncio.create_task(first.run())
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_first_completed(client)
            task.cancel()  # stopped abruptly: commands are cut off mid-flight
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert world.ground_truth is not None
            world.ground_truth.close()
            second = SwarmSimulator(
                SwarmWorld.resume(config, gt), url=url, clock=ScaledClock(10.0), token=LINK_TOKEN
            )
            task = asyncio.create_task(second.run())
            try:
                settled = await wait_all_terminal(client, expected)
            finally:
                second.stop()
                await asyncio.wait_for(task, 30)
    records = read_ground_truth(gt)
    assert len(settled) == expected
    keys = [r["key"] for r in records if r["kind"] == "execute"]
    assert len(keys) == len(set(keys))  # across both simulator processes
    assert min_separation(records) >= SEPARATION_NM
