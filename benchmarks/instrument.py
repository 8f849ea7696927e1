"""Benchmark: our NanonisClient against the official ``nanonis_spm`` client, both on the simulator,
and the command line's start-up against ``nspmctl``.

Run: ``uv run python benchmarks/instrument.py [--calls N] [--connections K] [--nspmctl PATH]
[--startup-runs N] [--only calls|startup]``.

Starts ``atomlab sim spm`` in a subprocess (so clients and server do not share a GIL), then

1. measures calls/s and p50/p99 latency of ``Bias.Get`` and of ``Signals.ValsGet`` for 32
   signals with each client, and the simulator's aggregate rate with K concurrent client
   processes (targets: ours >= 5x the official client's call rate; the simulator >= 5,000
   calls/s);
2. times whole processes, interleaved round by round so load hits all alike: ``atomlab
   --version`` (target <= 150 ms), ``atomlab instrument get bias --json`` against ``nspmctl
   --no-daemon get bias_v`` on the same simulator (target <= 0.75x), and the other commands
   (help, settings, plans) so none regresses. ``nspmctl`` is never a project dependency: install
   it in a throw-away venv (``uv venv /tmp/nspmctl && uv pip install --python
   /tmp/nspmctl/bin/python nspmctl``) and pass ``--nspmctl /tmp/nspmctl/bin/nspmctl``; without
   it the start-up section compares with the figure nspmctl documents (525 ms p50).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nanonis_spm

from atomlab.instrument import NanonisClient, protocol

SIGNALS = list(range(32))
READY_TIMEOUT_S = 30.0


@dataclass
class Figures:
    calls_per_s: float
    p50_us: float
    p99_us: float


def measure(calls: dict[str, Callable[[], object]], n: int, rounds: int) -> dict[str, Figures]:
    """Interleave the contenders in ``rounds`` rounds of ``n // rounds`` calls each, so a
    noisy machine slows all of them alike; calls/s is the median round, latencies all calls."""
    per_round = max(n // rounds, 1)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    rates: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():  # warm up
        for _ in range(min(200, per_round)):
            call()
    for _ in range(rounds):
        for name, call in calls.items():
            mine = samples[name]
            start = time.perf_counter()
            for _ in range(per_round):
                t0 = time.perf_counter()
                call()
                mine.append(time.perf_counter() - t0)
            rates[name].append(per_round / (time.perf_counter() - start))
    out = {}
    for name, mine in samples.items():
        mine.sort()
        out[name] = Figures(
            statistics.median(rates[name]),
            statistics.median(mine) * 1e6,
            mine[min(len(mine) - 1, int(len(mine) * 0.99))] * 1e6,
        )
    return out


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


@contextlib.contextmanager
def simulator(ports: list[int]) -> Iterator[None]:
    args = [sys.executable, "-m", "atomlab", "sim", "spm", "--seed", "0"]
    for port in ports:
        args += ["--port", str(port)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:  # cross-process readiness: poll until the port accepts
            try:
                socket.create_connection(("127.0.0.1", ports[0]), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the simulator did not start") from None
                time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def official(port: int) -> nanonis_spm.Nanonis:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    return nanonis_spm.Nanonis(sock)


def hammer(port: int, start: Any, duration_s: float, counts: Any) -> None:
    """One client process: connect, wait for the others, then Bias.Get for ``duration_s``."""
    with NanonisClient("127.0.0.1", port) as client:
        client.call("Bias.Get")
        start.wait()
        calls, end = 0, time.perf_counter() + duration_s
        while time.perf_counter() < end:
            client.call("Bias.Get")
            calls += 1
    counts.put(calls)


def aggregate_rate(ports: list[int], duration_s: float) -> float:
    """Calls/s the simulator served to ``len(ports)`` client processes running at once."""
    ctx = multiprocessing.get_context("spawn")
    start, counts = ctx.Barrier(len(ports)), ctx.Queue()
    procs = [ctx.Process(target=hammer, args=(p, start, duration_s, counts)) for p in ports]
    for proc in procs:
        proc.start()
    total = sum(counts.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join()
    return total / duration_s


def raw_exchange(sock: socket.socket, request: bytes) -> Callable[[], object]:
    """The floor: send prebuilt bytes and read the reply, no encoding or decoding at all."""

    def call() -> bytes:
        sock.sendall(request)
        data = sock.recv(65536)
        size = 40 + int.from_bytes(data[32:36], "big")
        while len(data) < size:
            data += sock.recv(65536)
        return data

    return call


def report(name: str, figures: dict[str, Figures]) -> None:
    print(name)
    for who, f in figures.items():
        print(
            f"  {who:<24}: {f.calls_per_s:10,.0f} calls/s   p50 {f.p50_us:8.1f} us"
            f"   p99 {f.p99_us:8.1f} us"
        )
    ours, theirs = figures["atomlab NanonisClient"], figures["official nanonis_spm"]
    print(
        f"  {'ratio ours/official':<24}: {ours.calls_per_s / theirs.calls_per_s:10.1f}x calls/s"
        f"   {theirs.p50_us / ours.p50_us:6.1f}x p50"
    )


NSPMCTL_DOCUMENTED_P50_S = 0.525
"""nspmctl's README: `nspmctl --no-daemon get bias_v` p50 on a developer laptop."""


def process_times(
    commands: dict[str, tuple[list[str], dict[str, str]]], runs: int, cwd: str
) -> dict[str, list[float]]:
    """Wall time of each command as a fresh process, interleaved round by round."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for argv, env in commands.values():  # warm the page cache first
        subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    for _ in range(runs):
        for name, (argv, env) in commands.items():
            start = time.perf_counter()
            done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
            times[name].append(time.perf_counter() - start)
            if done.returncode != 0:
                raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr[-500:]!r}")
    return times


BOOT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); sys.argv[0] = 'atomlab'; "
    "from atomlab.cli.entry import main; main()"
)
"""Runs the command line of the source tree given first (for --baseline-src comparisons)."""


def startup(port: int, runs: int, nspmctl: str | None, baseline_src: str | None = None) -> None:
    """Start-up of `atomlab` commands as fresh processes, and the nspmctl comparison."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ATOMLAB_")}
    home = tempfile.mkdtemp(prefix="atomlab-bench-home-")
    env["ATOMLAB_HOME"] = home
    atomlab = shutil.which("atomlab", path=str(Path(sys.executable).parent)) or "atomlab"
    port_s = str(port)
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "python -c pass (floor)": ([sys.executable, "-c", "pass"], env),
        "atomlab --version": ([atomlab, "--version"], env),
        "atomlab instrument get bias --json": (
            [atomlab, "instrument", "get", "bias", "--json", "--port", port_s],
            env,
        ),
    }
    if nspmctl:
        commands["nspmctl --no-daemon get bias_v"] = (
            [nspmctl, "--no-daemon", "get", "bias_v"],
            {**env, "NANONIS_PORTS": port_s, "NANONIS_HOST": "127.0.0.1"},
        )
    commands.update(
        {
            "atomlab --help": ([atomlab, "--help"], env),
            "atomlab config show --json": ([atomlab, "config", "show", "--json"], env),
            "atomlab instrument specs --json": ([atomlab, "instrument", "specs", "--json"], env),
            "atomlab instrument set bias_v 0.1 --plan-only": (
                [
                    atomlab,
                    "instrument",
                    "set",
                    "bias_v",
                    "0.1",
                    "--plan-only",
                    "--json",
                    "--port",
                    port_s,
                ],
                env,
            ),
            "atomlab instrument get bias (ATOMLAB_INSTRUMENT__PORT: full path)": (
                [atomlab, "instrument", "get", "bias", "--json"],
                {**env, "ATOMLAB_INSTRUMENT__PORT": port_s},
            ),
            "atomlab sim --help": ([atomlab, "sim", "--help"], env),
        }
    )
    if baseline_src:  # the same commands from another source tree (e.g. the branch point)
        here = str(Path(__file__).resolve().parents[1] / "src")
        for name, (argv, cmd_env) in list(commands.items()):
            if argv[0] == atomlab:
                commands[name] = ([sys.executable, "-c", BOOT, here, *argv[1:]], cmd_env)
                commands[f"  baseline: {name}"] = (
                    [sys.executable, "-c", BOOT, baseline_src, *argv[1:]],
                    cmd_env,
                )
    with tempfile.TemporaryDirectory() as cwd:  # no atomlab.yaml around
        times = process_times(commands, runs, cwd)
    print(f"start-up: each command as a fresh process, {runs} interleaved rounds (median, p90)")
    medians = {}
    for name, samples in times.items():
        samples.sort()
        medians[name] = statistics.median(samples)
        p90 = samples[min(len(samples) - 1, int(len(samples) * 0.9))]
        print(f"  {name:<66}: {medians[name] * 1e3:7.0f} ms   p90 {p90 * 1e3:7.0f} ms")
    get = medians["atomlab instrument get bias --json"]
    version = medians["atomlab --version"]
    print(f"  atomlab --version: {version * 1e3:.0f} ms (target <= 150 ms)")
    if nspmctl:
        theirs = medians["nspmctl --no-daemon get bias_v"]
        print(
            f"  instrument get / nspmctl --no-daemon: {get / theirs:.2f}x "
            f"({get * 1e3:.0f} / {theirs * 1e3:.0f} ms; target <= 0.75x)"
        )
    else:
        print(
            f"  nspmctl not given: against its documented {NSPMCTL_DOCUMENTED_P50_S * 1e3:.0f} ms "
            f"p50, instrument get is {get / NSPMCTL_DOCUMENTED_P50_S:.2f}x (target <= 0.75x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=2.0)
    parser.add_argument("--startup-runs", type=int, default=15)
    parser.add_argument("--nspmctl", default=shutil.which("nspmctl"))
    parser.add_argument("--only", choices=("calls", "startup"))
    parser.add_argument(
        "--baseline-src",
        help="also time every atomlab command from this source tree's src/ (e.g. an earlier "
        "commit's `git archive`), for regressions",
    )
    args = parser.parse_args()
    ports = [free_port() for _ in range(args.connections)]
    with simulator(ports):
        if args.only != "calls":
            startup(ports[0], args.startup_runs, args.nspmctl, args.baseline_src)
            if args.only == "startup":
                return
        port = ports[0]
        theirs = official(port)
        raw = socket.create_connection(("127.0.0.1", port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        vals_request = protocol.encode_request("Signals.ValsGet", {"indexes": SIGNALS, "wait": 0})
        with NanonisClient("127.0.0.1", port) as ours, contextlib.redirect_stdout(io.StringIO()):
            bias = measure(
                {
                    "official nanonis_spm": theirs.Bias_Get,
                    "atomlab NanonisClient": lambda: ours.call("Bias.Get"),
                    "raw socket (floor)": raw_exchange(raw, protocol.encode_request("Bias.Get")),
                },
                args.calls,
                args.rounds,
            )
            vals = measure(
                {
                    "official nanonis_spm": lambda: theirs.Signals_ValsGet(SIGNALS, 0),
                    "atomlab NanonisClient": lambda: ours.read_signals(SIGNALS),
                    "raw socket (floor)": raw_exchange(raw, vals_request),
                },
                args.calls,
                args.rounds,
            )
        theirs.close()
        raw.close()
        aggregate = aggregate_rate(ports, args.duration_s)
    print(f"calls per contender: {args.calls} in {args.rounds} interleaved rounds")
    print("simulator: `atomlab sim spm` in its own process")
    report("Bias.Get", bias)
    report("Signals.ValsGet (32 signals)", vals)
    print(
        f"simulator aggregate       : {aggregate:10,.0f} calls/s "
        f"({len(ports)} connections, Bias.Get, one client process each)"
    )


if __name__ == "__main__":
    main()
