"""Benchmark: the swarm service against its targets, each with a baseline from the same run.

Run: ``uv run python benchmarks/swarm.py [--requests N] [--steps N] [--disconnects N]``.

1. ingest ack latency p50/p99 at 32 concurrent connections, the service (authentication, the
   request guard, validation, queue, JSON log line, metrics and the group commit that makes a
   202 durable) vs a bare FastAPI endpoint, each on uvicorn in its own process;
2. planner time for 100 and 300 defects, and its route length vs naive detection order;
3. separation violations in the simulator's ground truth over many random scenario steps
   (coordinator and simulated world wired in one process, fake clock), plus the reassignment
   latency after a failure is detected;
4. lost or twice-run commands across forced disconnects (real server, real simulator);
5. scale: a real ``atomlab swarm serve`` with a real ``atomlab sim swarm`` of 256 agents and
   5,000 queued defects: /health p50/p99 against the idle service measured in the same run, and
   the time from SIGTERM to exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
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


def bare_durable_app(home: str) -> Any:
    """The second baseline: the bare endpoint made durable the obvious way, one SQLite commit
    (WAL, synchronous=NORMAL, like the service's default) per request before the 202."""
    import sqlite3
    import threading

    from fastapi import FastAPI

    conn = sqlite3.connect(Path(home) / "bare.sqlite", check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS defects (x REAL, y REAL, severity INTEGER)")
    lock = threading.Lock()
    app = FastAPI()

    def store(batch: SensorDataIn) -> None:
        with lock:
            conn.executemany(
                "INSERT INTO defects VALUES (?, ?, ?)",
                [(c.x, c.y, c.severity) for c in batch.coordinates],
            )
            conn.commit()

    @app.post("/api/sensor-data", status_code=202)
    async def ingest(batch: SensorDataIn) -> dict[str, int]:
        await asyncio.to_thread(store, batch)
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
        sync = os.environ.get("SWARM_BENCH_SYNC", "normal")  # SQLite synchronous: normal | full
        swarm = {"db_synchronous": sync}
        settings = load_settings(overrides={"home": home, "swarm": swarm}, environ={}).settings
        app = create_app(settings)
    elif kind == "bare-durable":
        app = bare_durable_app(home)
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


def _request(host: str, index: int, token: str = "") -> bytes:
    rng = random.Random(index)
    coordinate = {
        "x": rng.randrange(0, 200) / 10,
        "y": rng.randrange(0, 200) / 10,
        "defect_type": rng.choice(["vacancy", "adatom", "step"]),
        "severity": rng.randint(1, 10),
    }
    body = json.dumps({"coordinates": [coordinate]}).encode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST /api/sensor-data HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def load(url: str, requests: int, offset: int = 0, token: str = "") -> list[float]:
    """``requests`` POSTs (each a new defect) over ``CONCURRENCY`` keep-alive connections, from
    a raw HTTP/1.1 client so the load generator costs little next to the server."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    per_worker = requests // CONCURRENCY

    async def worker(w: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        for i in range(per_worker):
            request = _request(host, offset + w * per_worker + i, token)
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
    kinds = ("bare", "bare-durable", "swarm")
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as home:
        servers = {kind: start_server(kind, home) for kind in kinds}
        try:
            tokens = json.loads((Path(home) / "swarm" / "tokens.json").read_text())
            for r in range(rounds):
                for kind, (_, url) in servers.items():
                    token = tokens["ingest"] if kind == "swarm" else ""
                    # warm-up, then the measured run
                    asyncio.run(load(url, CONCURRENCY * 5, offset=10**7 + r * 10**5, token=token))
                    latencies = asyncio.run(load(url, requests, offset=r * 10**6, token=token))
                    results[kind].append((percentile(latencies, 0.5), percentile(latencies, 0.99)))
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=30)
    p50s = {kind: statistics.median(p50 for p50, _ in results[kind]) for kind in kinds}
    p99s = {kind: statistics.median(p99 for _, p99 in results[kind]) for kind in kinds}
    labels = {
        "bare": "bare FastAPI (in memory)",
        "bare-durable": "bare + a commit per request",
        "swarm": "swarm service (durable)",
    }
    print(f"ingest @ {CONCURRENCY} connections, {requests} requests x {rounds} rounds (median):")
    for kind in kinds:
        print(
            f"  {labels[kind]:<30} p50 {p50s[kind] * 1e3:7.2f} ms  p99 {p99s[kind] * 1e3:7.2f} ms"
        )
    swarm99 = p99s["swarm"]
    print(
        f"  ratio p99: {swarm99 / p99s['bare']:.2f}x the in-memory endpoint, "
        f"{swarm99 / p99s['bare-durable']:.2f}x the commit-per-request one "
        "(target: p99 <= 50 ms with every 202 durable)"
    )


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
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
        link_token = app.state.swarm.tokens.link
        sim = SwarmSimulator(
            world, url=url, clock=ScaledClock(20.0), max_resends=100, token=link_token
        )
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


# --- 5. scale: 256 agents, 5,000 queued defects ----------------------------------------------


def _spawn(args: list[str], home: str, env_extra: dict[str, str]) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMLAB_")}
    env.update({"ATOMLAB_HOME": home, **env_extra})
    return subprocess.Popen(
        [sys.executable, "-m", "atomlab", "--log-level", "WARNING", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _probe_health(url: str, seconds: float, interval_s: float = 0.05) -> list[float]:
    """GET /health every ``interval_s`` for ``seconds``: the latency of each (one keep-alive
    connection, as a monitoring probe would use)."""
    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=30.0) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            began = time.perf_counter()
            client.get("/health").raise_for_status()
            latencies.append(time.perf_counter() - began)
            time.sleep(interval_s)
    return latencies


def bench_scale(agents: int, defects: int, seconds: float) -> None:
    side_nm = 160.0  # 256 agents 10 nm apart
    bounds = json.dumps([0.0, side_nm])
    env = {"ATOMLAB_SWARM__BOUNDS_X_NM": bounds, "ATOMLAB_SWARM__BOUNDS_Y_NM": bounds}
    with tempfile.TemporaryDirectory() as home:
        server = _spawn(["swarm", "serve", "--port", "0"], home, env)
        assert server.stderr is not None
        url = ""
        for line in server.stderr:
            match = re.search(r"swarm service on (http://\S+)", line)
            if match:
                url = match.group(1)
                break
        sim: subprocess.Popen[str] | None = None
        try:
            _wait_healthy(url)
            idle = _probe_health(url, seconds / 2)
            token = json.loads((Path(home) / "swarm" / "tokens.json").read_text())["ingest"]
            # The simulator finds the service and its link token in the shared data home.
            sim_args = ["sim", "swarm", "--agents", str(agents), "--defects", "0", "--seed", "5"]
            sim_args += ["--width-nm", str(side_nm), "--height-nm", str(side_nm)]
            sim = _spawn(sim_args, home, env)
            _wait_for(url, lambda h: h["link"]["connected"] and sum(h["agents"].values()) >= agents)
            rng = random.Random(5)
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
                for start in range(0, defects, 1000):
                    batch = [
                        {
                            "x": rng.randrange(0, int(side_nm * 10)) / 10,
                            "y": rng.randrange(0, int(side_nm * 10)) / 10,
                            "severity": rng.randint(1, 10),
                            "defect_type": f"kind{start + i}",  # no two are duplicates
                        }
                        for i in range(min(1000, defects - start))
                    ]
                    c.post("/api/sensor-data", json={"coordinates": batch}, timeout=60.0)
            loaded = _probe_health(url, seconds)
            health = httpx.get(f"{url}/health", timeout=30.0).json()
            began = time.perf_counter()
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=60)
            stop_s = time.perf_counter() - began
        finally:
            for proc in (sim, server):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
    i50, i99 = percentile(idle, 0.5), percentile(idle, 0.99)
    l50, l99 = percentile(loaded, 0.5), percentile(loaded, 0.99)
    print(f"scale: {agents} agents (atomlab sim swarm), {defects} defects ingested:")
    print(
        f"  /health idle      p50 {i50 * 1e3:7.2f} ms  p99 {i99 * 1e3:7.2f} ms ({len(idle)} probes)"
    )
    print(
        f"  /health at scale  p50 {l50 * 1e3:7.2f} ms  p99 {l99 * 1e3:7.2f} ms "
        f"({len(loaded)} probes; ratio p99 {l99 / i99:.1f}x; target p99 <= 100 ms)"
    )
    print(
        f"  during the run: queue {health['queue_depth']}, commands {health['commands']}, "
        f"status {health['status']}"
    )
    print(f"  SIGTERM to exit: {stop_s:.2f} s, exit code {code} (target <= 5 s, 143)")


def _wait_healthy(url: str) -> None:
    _wait_for(url, lambda _h: True)


def _wait_for(url: str, condition: Any, limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if condition(httpx.get(f"{url}/health", timeout=5.0).json()):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"the service at {url} did not get there in {limit_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3200)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--disconnects", type=int, default=50)
    parser.add_argument("--serve", choices=["swarm", "bare", "bare-durable"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--home", default="")
    parser.add_argument("--scale-agents", type=int, default=256)
    parser.add_argument("--scale-defects", type=int, default=5000)
    parser.add_argument("--scale-seconds", type=float, default=30.0)
    parser.add_argument(
        "--only", choices=["ingest", "planner", "scenarios", "disconnects", "scale"]
    )
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
    if args.only in (None, "scale"):
        bench_scale(args.scale_agents, args.scale_defects, args.scale_seconds)


if __name__ == "__main__":
    main()
