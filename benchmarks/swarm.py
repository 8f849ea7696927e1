"""Benchmark: the swarm service against its targets, each with a baseline from the same run.

Run: ``uv run python benchmarks/swarm.py [--requests N] [--steps N] [--disconnects N]``.

1. ingest ack latency p50/p99 at 32 concurrent connections, the service (validation, queue,
   JSON log line, metrics) vs a bare FastAPI endpoint, each on uvicorn in its own process;
2. planner time for 100 and 300 defects, and its route length vs naive detection order;
3. separation violations in the simulator's ground truth over many random scenario steps
   (coordinator and simulated world wired in one process, fake clock), plus the reassignment
   latency after a failure is detected;
4. lost or twice-run commands across forced disconnects (real server, real simulator).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from atomlab.core.clock import FakeClock
from atomlab.core.metrics import new_registry
from atomlab.core.settings import load_settings
from atomlab.sim.swarm_wire import CommandPayload
from atomlab.sim.swarm_world import FaultConfig, SwarmConfig, SwarmWorld
from atomlab.swarm import Point, SwarmCoordinator, SwarmMetrics, naive_order, plan_route
from atomlab.swarm.models import SensorDataIn
from atomlab.swarm.planner import PlanStop, route_length

CONCURRENCY = 32
BODY = {"coordinates": [{"x": 1.2, "y": 3.4, "z": 0.0, "defect_type": "vacancy", "severity": 5}]}


# --- 1. ingest latency ----------------------------------------------------------------------


def bare_app() -> Any:
    """The baseline: FastAPI + pydantic validation + an in-memory queue, nothing else."""
    from fastapi import FastAPI

    app = FastAPI()
    queue: asyncio.Queue[SensorDataIn] = asyncio.Queue()

    @app.post("/api/sensor-data", status_code=202)
    async def ingest(batch: SensorDataIn) -> dict[str, int]:
        queue.put_nowait(batch)
        return {"accepted": len(batch.coordinates)}

    return app


def serve(kind: str, port: int, home: str) -> None:
    """Child process: serve ``kind`` (swarm or bare) on ``port`` until killed."""
    import uvicorn

    from atomlab.core.logging import configure_logging
    from atomlab.swarm import create_app

    if kind == "swarm":
        # JSON log lines at INFO (every request and batch), written to /dev/null: their cost is
        # part of the figure. SWARM_BENCH_LOG=WARNING measures without them.
        level = os.environ.get("SWARM_BENCH_LOG", "INFO")
        devnull = Path(os.devnull).open("w")  # noqa: SIM115 - lives as long as the server
        configure_logging(level, "json", stream=devnull)
        settings = load_settings(overrides={"home": home}, environ={}).settings
        app = create_app(settings)
    else:
        app = bare_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(kind: str, home: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port), "--home", home],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.post(f"{url}/api/sensor-data", json=BODY, timeout=1.0)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{kind} server did not start")


def _request(host: str, index: int) -> bytes:
    rng = random.Random(index)
    coordinate = {
        "x": rng.randrange(0, 200) / 10,
        "y": rng.randrange(0, 200) / 10,
        "defect_type": rng.choice(["vacancy", "adatom", "step"]),
        "severity": rng.randint(1, 10),
    }
    body = json.dumps({"coordinates": [coordinate]}).encode()
    head = (
        f"POST /api/sensor-data HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def load(url: str, requests: int, offset: int = 0) -> list[float]:
    """``requests`` POSTs (each a new defect) over ``CONCURRENCY`` keep-alive connections, from
    a raw HTTP/1.1 client so the load generator costs little next to the server."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    per_worker = requests // CONCURRENCY

    async def worker(w: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        for i in range(per_worker):
            request = _request(host, offset + w * per_worker + i)
            began = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            match = re.search(rb"content-length: (\d+)", head.lower())
            await reader.readexactly(int(match.group(1)) if match else 0)
            latencies.append(time.perf_counter() - began)
            assert head.startswith(b"HTTP/1.1 202"), head
        writer.close()

    await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def bench_ingest(requests: int, rounds: int = 3) -> None:
    """Alternate the two servers over ``rounds`` and report the median round (a shared, busy
    machine makes single rounds noisy)."""
    results: dict[str, list[tuple[float, float]]] = {"bare": [], "swarm": []}
    with tempfile.TemporaryDirectory() as home:
        servers = {kind: start_server(kind, home) for kind in ("bare", "swarm")}
        try:
            for r in range(rounds):
                for kind, (_, url) in servers.items():
                    asyncio.run(load(url, CONCURRENCY * 5, offset=10**7 + r * 10**5))  # warm-up
                    latencies = asyncio.run(load(url, requests, offset=r * 10**6))
                    results[kind].append((percentile(latencies, 0.5), percentile(latencies, 0.99)))
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=30)
    b50 = statistics.median(p50 for p50, _ in results["bare"])
    b99 = statistics.median(p99 for _, p99 in results["bare"])
    s50 = statistics.median(p50 for p50, _ in results["swarm"])
    s99 = statistics.median(p99 for _, p99 in results["swarm"])
    print(f"ingest @ {CONCURRENCY} connections, {requests} requests x {rounds} rounds (median):")
    print(f"  bare FastAPI     p50 {b50 * 1e3:7.2f} ms  p99 {b99 * 1e3:7.2f} ms")
    print(f"  swarm service    p50 {s50 * 1e3:7.2f} ms  p99 {s99 * 1e3:7.2f} ms")
    print(f"  ratio p99 {s99 / b99:.2f}x (target <= 2x and p99 <= 50 ms)")


# --- 2. planner -----------------------------------------------------------------------------


def bench_planner() -> None:
    rng = random.Random(7)
    print("planner (severity classes, nearest neighbour + 2-opt) vs naive detection order:")
    for n in (100, 300):
        stops = [
            PlanStop(
                f"d{i}", Point(rng.randrange(2000), rng.randrange(2000)), rng.randint(1, 10), i
            )
            for i in range(n)
        ]
        times = []
        for _ in range(5):
            began = time.perf_counter()
            path = plan_route(stops, Point(0, 0))
            times.append(time.perf_counter() - began)
        naive = route_length(Point(0, 0), naive_order(stops))
        best = min(times)
        target = 20 if n == 100 else 200
        print(
            f"  {n} defects: {best * 1e3:6.1f} ms (median {statistics.median(times) * 1e3:.1f}, "
            f"target <= {target} ms); route {path.total_units / naive:.2f}x naive length"
        )


# --- 3. random scenarios in one process -----------------------------------------------------


DISPATCH_TIMES: list[float] = []  # rounds that handed work to an agent (property 20)


async def scenario(seed: int, steps: int) -> tuple[int, float | None, list[float], int]:
    """One seeded scenario: 16 agents, deaths, stuck commands; returns the ground truth."""
    faults = FaultConfig(agent_death_rate_per_s=0.004, max_dead_agents=3, stuck_prob=0.02)
    world = SwarmWorld(SwarmConfig(agents=16, seed=seed, defects=40, faults=faults))
    clock = FakeClock()
    settings = load_settings(
        overrides={"swarm": {"heartbeat_interval_s": 2.0, "command_timeout_s": 30.0}}, environ={}
    ).settings.swarm
    coord = SwarmCoordinator(settings=settings, clock=clock, metrics=SwarmMetrics(new_registry()))
    outbox: list[tuple[dict[str, Any], str]] = []

    async def send(payload: dict[str, Any], *, idempotency_key: str) -> None:
        outbox.append((payload, idempotency_key))

    coord.send = send
    coord.handle_event("link_up", {"agents": [a.model_dump() for a in world.agent_infos()]})
    coord.handle_event("sensor_data", world.sensor_data().model_dump())
    await coord.plan_pending()
    reassign: list[float] = []
    tick = world.config.tick_s
    for step in range(steps):
        clock.advance(tick)
        began = time.perf_counter()
        if coord.dispatch_round():
            DISPATCH_TIMES.append(time.perf_counter() - began)
        await coord.flush_outbox()
        for payload, key in outbox:
            for event in world.submit(CommandPayload.model_validate(payload), key):
                coord.handle_event("command_result", event.model_dump())
        outbox.clear()
        for event in world.step(tick):
            kind = "command_result" if hasattr(event, "command_id") else "proximity_alert"
            coord.handle_event(kind, event.model_dump())
        if step % 5 == 0:
            coord.handle_event("agent_status", world.status().model_dump())
        if step % 10 == 0:
            coord.handle_event("heartbeat", {"agents_alive": world.alive()})
        began = time.perf_counter()
        if coord.check_agents():
            coord.dispatch_round()
            reassign.append(time.perf_counter() - began)
        if step % 200 == 0 and not coord.queue and not coord.jobs:
            for _ in range(5):  # keep the swarm busy: new defects appear
                x, y = rng_point(world, seed * 100000 + step)
                world.surface.add_defect("vacancy", x, y, random.Random(step).randint(1, 10))
            coord.handle_event("sensor_data", world.sensor_data().model_dump())
            await coord.plan_pending()
    return world.violations, world.min_separation_nm, reassign, world.ticks


def rng_point(world: SwarmWorld, seed: int) -> tuple[int, int]:
    rng = random.Random(seed)
    return rng.randrange(5, world.width - 5), rng.randrange(5, world.height - 5)


def bench_scenarios(total_steps: int) -> None:
    per = 2500
    violations, ticks, smallest, reassign = 0, 0, float("inf"), []
    began = time.perf_counter()
    for seed in range(max(total_steps // per, 1)):
        v, m, r, t = asyncio.run(scenario(seed, per))
        violations += v
        ticks += t
        reassign.extend(r)
        if m is not None:
            smallest = min(smallest, m)
    elapsed = time.perf_counter() - began
    print(f"random scenarios: {ticks} steps of 16 agents in {elapsed:.1f} s")
    print(
        f"  separation violations in the ground truth: {violations} (target 0); "
        f"min separation {smallest:.3f} nm"
    )
    if DISPATCH_TIMES:
        print(
            f"  dispatch round that assigns queued work: p50 "
            f"{percentile(DISPATCH_TIMES, 0.5) * 1e3:.2f} ms, p99 "
            f"{percentile(DISPATCH_TIMES, 0.99) * 1e3:.2f} ms over {len(DISPATCH_TIMES)} rounds "
            "(property 20: next command within 100 ms)"
        )
    if reassign:
        print(
            f"  reassignment after detection: p50 {percentile(reassign, 0.5) * 1e3:.2f} ms, "
            f"p99 {percentile(reassign, 0.99) * 1e3:.2f} ms over {len(reassign)} failures "
            "(target p99 <= 100 ms)"
        )


# --- 4. forced disconnects ------------------------------------------------------------------


async def disconnects(count: int) -> None:
    import uvicorn

    from atomlab.core.logging import configure_logging
    from atomlab.sim.swarm import ScaledClock, SwarmSimulator
    from atomlab.sim.swarm_world import GroundTruthLog, read_ground_truth
    from atomlab.swarm import create_app

    configure_logging("ERROR", "console")  # the forced link_down warnings are the point here
    with tempfile.TemporaryDirectory() as tmp:
        swarm = {"heartbeat_interval_s": 1.0, "ack_timeout_s": 0.2, "command_timeout_s": 5.0}
        settings = load_settings(overrides={"home": tmp, "swarm": swarm}, environ={}).settings
        app = create_app(settings)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        server = uvicorn.Server(uvicorn.Config(app, log_level="error"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.02)
        faults = FaultConfig(disconnect_every_s=3.0, drop_prob=0.02, ack_loss_prob=0.02)
        log = Path(tmp) / "gt.jsonl"
        world = SwarmWorld(
            SwarmConfig(agents=8, seed=11, defects=60, faults=faults),
            ground_truth=GroundTruthLog(log),
        )
        url = f"ws://127.0.0.1:{sock.getsockname()[1]}/ws/isaac"
        sim = SwarmSimulator(world, url=url, clock=ScaledClock(20.0), max_resends=100)
        run = asyncio.create_task(sim.run())
        coord = app.state.swarm.coordinator
        began = time.perf_counter()
        while sim.connections < count + 1 and time.perf_counter() - began < 300:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        while coord.book.active() and time.perf_counter() - began < 300:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # let the last commands finish
        sim.stop()
        await run
        server.should_exit = True
        await task
        executed = [r["key"] for r in read_ground_truth(log) if r["kind"] == "execute"]
        issued = {c.command_id for c in coord.book.select()}
        lost = [c for c in coord.book.select() if not c.status.terminal]
        done = {c.command_id for c in coord.book.select() if c.status.value == "completed"}
        print(f"forced disconnects: {sim.connections - 1} reconnections, {len(issued)} commands")
        print(f"  separation violations in the ground truth: {world.violations} (target 0)")
        print(
            f"  executed twice: {len(executed) - len(set(executed))}; completed but never "
            f"executed: {len(done - set(executed))}; still open at the end: {len(lost)} "
            "(target 0 / 0 / 0)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3200)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--disconnects", type=int, default=50)
    parser.add_argument("--serve", choices=["swarm", "bare"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--home", default="")
    parser.add_argument("--only", choices=["ingest", "planner", "scenarios", "disconnects"])
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.home)
        return
    from atomlab.core.logging import configure_logging

    configure_logging("WARNING", "console")
    print(f"machine: {os.cpu_count()} cores; every figure below is from this run only")
    if args.only in (None, "planner"):
        bench_planner()
    if args.only in (None, "scenarios"):
        bench_scenarios(args.steps)
    if args.only in (None, "ingest"):
        bench_ingest(args.requests)
    if args.only in (None, "disconnects"):
        asyncio.run(disconnects(args.disconnects))


if __name__ == "__main__":
    main()
