"""Benchmark: the /ws/isaac link and the swarm simulator's ground truth.

Run: ``uv run python benchmarks/swarm_link.py [--commands N] [--disconnects N] [--steps N]``.

1. Link throughput: commands through ``SimulatorLink`` (validation, seq, tracking, acks) to a
   peer that acks each one, against a bare Starlette WebSocket pushing the same frames and reading
   the same acks: the cost of exactly-once delivery.
2. Forced disconnects: a stream of commands to the simulator (20x real time) while its link is
   cut every simulated second; counts commands lost (no final result) and run twice (two
   ``execute`` lines for one key in the ground truth) across N cuts.
3. Separation: the full service (planner, reservations, coordinator) driving 16 simulated agents
   through seeded scenarios until the agents have moved for N ticks; the smallest distance between
   two agents, from the ground-truth positions, against the same defects sent naively (each agent
   straight to its round-robin share, no reservations) in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect

from atomlab.core.clock import SystemClock
from atomlab.core.logging import configure_logging
from atomlab.core.settings import load_settings
from atomlab.sim.swarm import ScaledClock, SwarmSimulator
from atomlab.sim.swarm_wire import (
    AckPayload,
    CommandPayload,
    GridPoint,
    HandshakePayload,
    MessageType,
    decode,
    make_envelope,
)
from atomlab.sim.swarm_world import (
    FaultConfig,
    GroundTruthLog,
    SwarmConfig,
    SwarmWorld,
    read_ground_truth,
)
from atomlab.swarm.api import create_app
from atomlab.swarm.link import SimulatorLink

CLOCK = SystemClock()
COMMAND = {"command_id": "c", "agent_id": "agent-00", "action": "move", "target": {"x": 1, "y": 1}}


async def until(condition: Callable[[], bool], interval_s: float, timeout_s: float = 120) -> None:
    """Poll ``condition`` (state owned by another task or process) until true or timed out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition() or time.monotonic() > deadline:
            return
        await asyncio.sleep(interval_s)


class Served:
    """uvicorn in this event loop on 127.0.0.1, any free port."""

    def __init__(self, app: Any, lifespan: str = "off") -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="error", lifespan=lifespan, access_log=False
        )
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> int:
        self.task = asyncio.create_task(self.server.serve())
        await until(lambda: self.server.started, 0.01)
        port: int = self.server.servers[0].sockets[0].getsockname()[1]
        return port

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        assert self.task is not None
        await self.task


# --- 1. throughput -------------------------------------------------------------------------


async def acking_peer(url: str, n: int, handshake: bool) -> None:
    async with connect(url, max_queue=None) as ws:
        if handshake:
            await ws.recv()
            hello = HandshakePayload(role="simulator", session_id="bench")
            await ws.send(make_envelope(MessageType.HANDSHAKE, hello, clock=CLOCK).encode())
        got = 0
        while got < n:
            frame = decode(await ws.recv())
            if frame.type is not MessageType.COMMAND:
                continue
            assert frame.seq is not None
            ack = AckPayload(message_id=frame.message_id, seq=frame.seq)
            await ws.send(make_envelope(MessageType.ACK, ack, clock=CLOCK).encode())
            got += 1


async def link_rate(n: int) -> float:
    link = SimulatorLink(clock=CLOCK)
    app = Starlette(routes=[WebSocketRoute("/ws/isaac", link.handle)])
    async with Served(app) as port:
        peer = asyncio.create_task(acking_peer(f"ws://127.0.0.1:{port}/ws/isaac", n, True))
        await until(lambda: link.connected, 0.01)
        start = time.perf_counter()
        for i in range(n):
            await link.send_command({**COMMAND, "command_id": f"c{i}"}, idempotency_key=f"k{i}")
        await until(lambda: link.pending == 0, 0.001)
        elapsed = time.perf_counter() - start
        await peer
    return n / elapsed


async def bare_rate(n: int) -> float:
    frames = [
        make_envelope(
            MessageType.COMMAND,
            {**COMMAND, "command_id": f"c{i}"},
            clock=CLOCK,
            seq=i + 1,
            idempotency_key=f"k{i}",
        ).encode()
        for i in range(n)
    ]
    elapsed: list[float] = []

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()

        async def read_acks() -> None:
            for _ in range(n):
                await ws.receive_text()

        start = time.perf_counter()
        reader = asyncio.create_task(read_acks())
        for frame in frames:
            await ws.send_text(frame)
        await reader
        elapsed.append(time.perf_counter() - start)
        with contextlib.suppress(Exception):  # the peer may have hung up already
            await ws.close()

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    async with Served(app) as port:
        await acking_peer(f"ws://127.0.0.1:{port}/ws", n, False)
        await until(lambda: bool(elapsed), 0.001)
    return n / elapsed[0]


# --- 2. forced disconnects -----------------------------------------------------------------


async def forced_disconnects(cuts: int, workdir: Path) -> dict[str, Any]:
    results: dict[str, str] = {}

    async def on_event(kind: str, payload: dict[str, Any]) -> None:
        if kind == "command_result" and payload["status"] in ("completed", "failed"):
            results[payload["idempotency_key"]] = payload["status"]

    link = SimulatorLink(clock=CLOCK, ack_timeout_s=0.2, on_event=on_event)
    faults = FaultConfig(disconnect_every_s=1.0)
    config = SwarmConfig(agents=4, seed=1, defects=0, drift_prob=0.0, faults=faults)
    world = SwarmWorld(config, ground_truth=GroundTruthLog(workdir / "cuts.jsonl"))
    homes = {a.agent_id: (a.x, a.y) for a in world.agents.values()}
    app = Starlette(routes=[WebSocketRoute("/ws/isaac", link.handle)])
    sent: list[str] = []
    async with Served(app) as port:
        sim = SwarmSimulator(world, url=f"ws://127.0.0.1:{port}/ws/isaac", clock=ScaledClock(20))
        task = asyncio.create_task(sim.run())
        for i in itertools.count():
            if world.faults.counts.get("disconnect", 0) >= cuts:
                break
            agent = f"agent-{i % 4:02d}"
            x, y = homes[agent]
            target = {"x": (x + (i % 3)) / 10, "y": y / 10}
            key = f"k{i}"
            cmd = {"command_id": key, "agent_id": agent, "action": "move", "target": target}
            await link.send_command(cmd, idempotency_key=key)
            sent.append(key)
            await asyncio.sleep(0.01)
        await until(lambda: len(results) >= len(sent), 0.05, timeout_s=60)
        sim.stop()
        await task
    executed = [
        r["key"] for r in read_ground_truth(workdir / "cuts.jsonl") if r["kind"] == "execute"
    ]
    return {
        "cuts": world.faults.counts.get("disconnect", 0),
        "connections": sim.connections,
        "commands": len(sent),
        "lost": len(set(sent) - set(results)),
        "twice": len(executed) - len(set(executed)),
    }


# --- 3. separation -------------------------------------------------------------------------


def pairwise_min(records: list[dict[str, Any]]) -> tuple[float, int]:
    best, moving = math.inf, 0
    for record in records:
        if record["kind"] != "tick":
            continue
        moving += 1
        for a, b in itertools.combinations(record["positions"].values(), 2):
            best = min(best, math.dist(a, b))
    return best, moving


def scenario_config(seed: int) -> SwarmConfig:
    return SwarmConfig(
        agents=16, seed=seed, width_nm=40.0, height_nm=40.0, defects=30, drift_prob=0.2
    )


def naive(seed: int, workdir: Path) -> tuple[float, int]:
    config = scenario_config(seed)
    world = SwarmWorld(config, ground_truth=GroundTruthLog(workdir / f"naive-{seed}.jsonl"))
    for i, defect in enumerate(world.surface.defects):
        command = CommandPayload(
            command_id=f"n{i}",
            agent_id=f"agent-{i % 16:02d}",
            action="repair",
            target=GridPoint.from_units(defect.x, defect.y),
        )
        world.submit(command, f"n{i}")
    for _ in range(3000):
        world.step()
    world.close()
    return pairwise_min(read_ground_truth(workdir / f"naive-{seed}.jsonl"))


async def coordinated(seed: int, workdir: Path) -> tuple[float, int, int]:
    overrides = {
        "home": workdir / "home",
        "swarm": {
            "bounds_x_nm": (0.0, 40.0),
            "bounds_y_nm": (0.0, 40.0),
            "heartbeat_interval_s": 1.0,
            "ack_timeout_s": 0.5,
            "command_timeout_s": 10.0,
        },
    }
    settings = load_settings(overrides=overrides).settings
    app = create_app(settings, db_url=f"sqlite:///{workdir / f'swarm-{seed}.sqlite'}")
    gt = workdir / f"service-{seed}.jsonl"
    world = SwarmWorld(scenario_config(seed), ground_truth=GroundTruthLog(gt))
    async with Served(app, lifespan="on") as port:
        link_token = app.state.swarm.tokens.link  # the service's own link credential
        sim = SwarmSimulator(
            world, url=f"ws://127.0.0.1:{port}/ws/isaac", clock=ScaledClock(20), token=link_token
        )
        task = asyncio.create_task(sim.run())
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                defects = (await client.get("/api/defects")).json()
                settled = [d for d in defects if d["status"] in ("completed", "failed")]
                if len(defects) >= 30 and len(settled) == len(defects):
                    break
                await asyncio.sleep(0.25)
        sim.stop()
        await task
    best, moving = pairwise_min(read_ground_truth(gt))
    return best, moving, world.violations


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--commands", type=int, default=5000)
    parser.add_argument("--disconnects", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10_000)
    args = parser.parse_args()
    configure_logging("ERROR", "console")

    bare = await bare_rate(args.commands)
    linked = await link_rate(args.commands)
    print(f"1. {args.commands} commands, acked one by one (2-core sandbox, loopback)")
    print(f"   bare WebSocket push + ack : {bare:10,.0f} /s  1.00x")
    print(f"   SimulatorLink send_command: {linked:10,.0f} /s  {linked / bare:.2f}x")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cut = await forced_disconnects(args.disconnects, work)
        print(
            f"2. {cut['cuts']} forced disconnects ({cut['connections']} connections), "
            f"{cut['commands']} commands: lost {cut['lost']}, run twice {cut['twice']}"
        )

        moved = 0
        service_min, naive_min, violations, scenarios = math.inf, math.inf, 0, 0
        for seed in itertools.count(100):
            if moved >= args.steps:
                break
            best, steps, seen = await coordinated(seed, work)
            service_min, moved, violations = (
                min(service_min, best),
                moved + steps,
                violations + seen,
            )
            naive_min = min(naive_min, naive(seed, work)[0])
            scenarios += 1
        print(f"3. {scenarios} scenarios, 16 agents, 30 defects each, {moved:,} ticks with motion")
        print(f"   naive dispatch   : min separation {naive_min:.3f} nm")
        print(
            f"   swarm service    : min separation {service_min:.3f} nm, "
            f"{violations} violations (< 0.5 nm)"
        )


if __name__ == "__main__":
    asyncio.run(main())
